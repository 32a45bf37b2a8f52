"""``meshctl demo``: the whole mesh on one machine, no cluster.

Starts the control plane on a copy of the example config, the example backends, and
two clients driving traffic side by side — meshlib in-process (``mesh.channel``) and
gRPC's native xDS client — each printing the live split once a second; halfway through
it edits the route on disk, and both splits follow without restarting anything.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from xds_server.sources.yaml_loader import load_model

__all__ = ["run_demo"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


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


def run_demo(config: Path, *, seconds: float = 24.0) -> int:
    """Run the demo for about ``seconds``; returns the exit status."""
    examples = Path(__file__).resolve().parents[1] / "examples"
    model = load_model(config)
    work = Path(tempfile.mkdtemp(prefix="meshlib-demo-"))
    mesh_dir = work / "mesh"
    shutil.copytree(config, mesh_dir) if config.is_dir() else shutil.copy(config, mesh_dir)
    xds_port, admin_port = _free_port(), _free_port()
    procs: list[subprocess.Popen] = []
    py = sys.executable

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen([py, *args], env={**os.environ, **(env or {})})
        procs.append(proc)
        return proc

    try:
        _say(f"control plane: xDS on 127.0.0.1:{xds_port}, admin on 127.0.0.1:{admin_port}")
        start("-m", "meshctl.cli", "control-plane", "--config", str(mesh_dir),
              "--xds-address", f"127.0.0.1:{xds_port}",
              "--admin-address", f"127.0.0.1:{admin_port}")
        seen: set[tuple[str, int]] = set()
        for eps in model.endpoint_slices:
            for port in eps.ports:
                for ep in eps.endpoints:
                    for address in ep.addresses:
                        if (address, port.port) not in seen and address.startswith("127."):
                            seen.add((address, port.port))
                            name = ep.target_pod or f"{eps.service_name}-{port.port}"
                            start(str(examples / "reviews_server.py"), "--name", name,
                                  "--host", address, "--port", str(port.port))
        _wait_ready(f"http://127.0.0.1:{admin_port}/readyz")
        bootstrap = work / "bootstrap.json"
        subprocess.run([py, "-m", "meshctl.cli", "bootstrap", "--xds-address",
                        f"127.0.0.1:{xds_port}", "--node-id", "demo-client",
                        "--output", str(bootstrap)], check=True)
        _say("two clients, one line each per second: meshlib (in-process, "
             "mesh.channel('reviews')) and gRPC's native xDS client "
             "(xds:///reviews.default.svc.cluster.local:50051)")
        client = start(str(examples / "meshlib_client.py"), "--xds-address",
                       f"127.0.0.1:{xds_port}", "--seconds", str(seconds), "--rate", "100",
                       "--one-line")
        start(str(examples / "native_client.py"), "--seconds", str(seconds), "--rate", "100",
              "--one-line", env={"GRPC_XDS_BOOTSTRAP": str(bootstrap)})
        time.sleep(seconds / 2)
        routes = sorted(mesh_dir.glob("*rout*.yaml"))
        if routes:
            _say(f"editing {routes[0].name} on disk: weights -> 50/50 (no restart)")
            _even_weights(routes[0])
        client.wait(timeout=seconds + 30)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics") as resp:
            metrics = resp.read().decode()
        _say("control plane metrics")
        for line in metrics.splitlines():
            if line.startswith(("meshlib_xds_pushes_total", "meshlib_xds_nacks_total",
                                "meshlib_config_reloads_total", "meshlib_xds_connected")):
                print(line)
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def _wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"control plane not ready at {url}")
