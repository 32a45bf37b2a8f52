"""``meshctl demo``: the whole mesh on one machine, no cluster.

Starts the control plane on a copy of the demo config, the backends, and two clients
driving traffic side by side — meshlib in-process (``mesh.channel``) and gRPC's native
xDS client — each printing the live split once a second; halfway through it edits the
route on disk, and both splits follow without restarting anything.

The config ships with meshctl (``meshctl/demo_mesh``, the same files as
``examples/mesh``) and so do the programs it starts (:mod:`meshctl.demo_apps`): an
installed meshctl needs no source checkout.

Stopping: on SIGINT (Ctrl-C), SIGTERM or SIGHUP the demo stops every process it started (by
PID: SIGTERM, then SIGKILL after 1.5 s), removes its temporary directory and exits with
128 + the signal number, as a shell reports a process killed by it: 130 for SIGINT, 143
for SIGTERM, 129 for SIGHUP. On Linux its children also get SIGTERM if the demo itself is SIGKILLed
(``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib.resources
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import yaml

from meshctl.demo_apps import local_backends
from meshlib.contract import ConfigError
from xds_server.bootstrap import BootstrapOptions, bootstrap_json
from xds_server.sources.yaml_loader import load_model

__all__ = ["STOP_SECONDS", "demo_config", "run_demo"]

STOP_SECONDS = 1.5  # how long children get to exit on SIGTERM before SIGKILL
METRICS = ("meshlib_xds_pushes_total", "meshlib_xds_nacks_total",
           "meshlib_config_reloads_total")


def demo_config() -> importlib.resources.abc.Traversable:
    """The demo's mesh config, shipped as package data of meshctl."""
    return importlib.resources.files("meshctl") / "demo_mesh"


class _Stopped(Exception):
    """Raised by the demo's SIGINT/SIGTERM handler to leave whatever it is waiting on."""


def _say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _busy(host: str, port: int) -> bool:
    """Is someone listening on ``host:port``? A bind test without SO_REUSEPORT (gRPC
    sets it, so a second server would share the port silently); SO_REUSEADDR only lets
    the bind pass over TIME_WAIT connections of a previous run."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _copy_config(config: Path | None, into: Path) -> None:
    if config is not None and config.is_file():
        into.mkdir()
        shutil.copy(config, into)
    elif config is not None:
        shutil.copytree(config, into)
    else:
        into.mkdir()
        for entry in demo_config().iterdir():
            if entry.name.endswith((".yaml", ".yml")):
                (into / entry.name).write_bytes(entry.read_bytes())


def _enable_access_logs(mesh_dir: Path) -> None:
    """Turn on ``MeshConfig.spec.accessLogs`` in the run's copy of the config."""
    for path in sorted(mesh_dir.glob("*.y*ml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        configs = [d for d in docs if d.get("kind") == "MeshConfig"]
        for doc in configs:
            doc.setdefault("spec", {})["accessLogs"] = {"enabled": True}
        if configs:
            path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
            return
    (mesh_dir / "demo-access-logs.yaml").write_text(yaml.safe_dump({
        "apiVersion": "meshlib.dev/v1alpha1", "kind": "MeshConfig",
        "metadata": {"name": "mesh"}, "spec": {"accessLogs": {"enabled": True}}}))


def _even_weights(route_file: Path) -> None:
    """Rewrite every weighted GRPCRoute rule in ``route_file`` to equal weights."""
    docs = [d for d in yaml.safe_load_all(route_file.read_text()) if d]
    for doc in docs:
        for rule in doc.get("spec", {}).get("rules", []):
            refs = rule.get("backendRefs", [])
            if len(refs) > 1:
                for ref in refs:
                    ref["weight"] = 50
    tmp = route_file.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    tmp.rename(route_file)


def _pdeathsig() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


class _Children:
    """The processes the demo started, stopped by PID."""

    PR_SET_PDEATHSIG = 1

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        self._prctl = _pdeathsig()
        self._parent = os.getpid()

    def _in_child(self) -> None:
        # Between fork and exec. SIGINT ignored: a terminal's Ctrl-C reaches the whole
        # process group, and the demo stops its children itself (SIGTERM), so none dies
        # half-started with a KeyboardInterrupt traceback. SIGTERM if the demo dies.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self._prctl is not None:
            self._prctl(self.PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != self._parent:  # the demo died before prctl
            os._exit(1)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "meshctl.demo_apps", *args],
            env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
            preexec_fn=self._in_child)

    def check_running(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode}")

    def stop(self) -> None:
        alive = [p for p in self.procs.values() if p.poll() is None]
        for proc in alive:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for proc in alive:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_until(ready: Callable[[], bool], what: str, children: _Children,
                timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        children.check_running()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.05)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def _accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def run_demo(config: Path | None = None, *, seconds: float = 24.0,
             access_logs: bool = False) -> int:
    """Run the demo for about ``seconds`` on ``config`` (default: the packaged demo
    config); returns the exit status (0, 1 if it cannot start, 128 + signal if stopped)."""
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            raise _Stopped

    # SIGHUP too: closing the terminal stops the demo as cleanly as Ctrl-C does.
    previous = {sig: signal.signal(sig, on_signal)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    children = _Children()
    work = Path(tempfile.mkdtemp(prefix="meshlib-demo-"))
    status = 1
    try:
        status = _run(config, children, work, seconds, access_logs)
    except _Stopped:
        pass
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        print(f"meshctl demo: {err}", file=sys.stderr)
    finally:
        received.append(0)  # a signal from now on only counts: the cleanup is short
        children.stop()
        shutil.rmtree(work, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received[0]:
        print(f"meshctl demo: stopped by {signal.Signals(received[0]).name}", file=sys.stderr)
        return 128 + received[0]
    return status


def _run(config: Path | None, children: _Children, work: Path, seconds: float,
         access_logs: bool) -> int:
    mesh_dir = work / "mesh"
    _copy_config(config, mesh_dir)
    try:
        model = load_model(mesh_dir)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        print(f"meshctl demo: {len(err.problems)} problem(s) in the config", file=sys.stderr)
        return 1
    backends = local_backends(model)
    for (host, port), name in sorted(backends.items(), key=lambda item: item[0][1]):
        if _busy(host, port):
            print(f"meshctl demo: port {port} on {host} (backend {name}) is already in use; "
                  f"is another demo running? Stop it, or free the port "
                  f"(`ss -ltnp 'sport = :{port}'` shows who holds it)", file=sys.stderr)
            return 1
    if access_logs:
        _enable_access_logs(mesh_dir)
    _play(config, backends, children, mesh_dir, work, seconds, access_logs)
    return 0


def _play(config: Path | None, backends: dict[tuple[str, int], str], children: _Children,
          mesh_dir: Path, work: Path, seconds: float, access_logs: bool) -> None:
    xds, admin = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    _say(f"control plane: xDS on {xds} (plaintext, loopback only: the demo's backends are "
         f"plain gRPC servers), admin on {admin}; config: {config or 'built in'}"
         f"{' (access logs on)' if access_logs else ''}")
    children.start("control plane", "control-plane", "--config", str(mesh_dir),
                   "--xds-address", xds, "--admin-address", admin)
    for (host, port), name in backends.items():
        children.start(name, "backend", "--name", name, "--host", host, "--port", str(port))
    _say("backends: " + ", ".join(f"{name} on {host}:{port}"
                                  for (host, port), name in backends.items()))
    _wait_until(lambda: _http_ok(f"http://{admin}/readyz"), "the control plane", children)
    for host, port in backends:
        _wait_until(lambda h=host, p=port: _accepts(h, p), f"{backends[host, port]}",
                    children)
    bootstrap = work / "bootstrap.json"
    bootstrap.write_text(bootstrap_json(BootstrapOptions(xds_address=xds,
                                                         node_id="demo-client")))
    _say("two clients, one line each per second: meshlib (in-process, "
         "mesh.channel('reviews')) and gRPC's native xDS client "
         "(xds:///reviews.default.svc.cluster.local:50051)")
    traffic = ("--seconds", str(seconds), "--rate", "100", "--one-line")
    children.start("meshlib client", "meshlib-client", "--xds-address", xds, *traffic)
    children.start("native client", "native-client", *traffic,
                   env={"GRPC_XDS_BOOTSTRAP": str(bootstrap)})
    time.sleep(seconds / 2)
    routes = sorted(mesh_dir.glob("*rout*.yaml"))
    if routes:
        _say(f"editing {routes[0].name} on disk: weights -> 50/50 (no restart)")
        _even_weights(routes[0])
    children.procs["meshlib client"].wait(timeout=seconds + 30)
    children.procs["native client"].wait(timeout=5)
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    _say("control plane metrics")
    for line in metrics.splitlines():
        if line.startswith(METRICS):
            print(line)
