"""``meshctl agent`` beside a workload whose xDS client cannot speak TLS (Node's
``@grpc/grpc-js-xds``): the real control plane in its secure mode (mTLS on the xDS
port, the CA over TLS on its own port), the real agent process, and Node bootstrapped
by ``meshctl bootstrap`` against the agent, all as processes stopped by PID.
"""

from __future__ import annotations

import json
import re
import signal
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    MESHCTL,
    ROOT,
    ControlPlaneProc,
    NativeClient,
    stop_process,
)
from tests.e2e.mesh_files import write_mesh
from tests.e2e.test_node_xds import NodeClient
from xds_server.ca import CA_CERT_FILE

TARGET = "xds:///reviews.default.svc.cluster.local:50051"
TOKEN = "shop-web-token-0123456789"
IDENTITY = "spiffe://cluster.local/ns/shop/sa/web"
SERIAL = re.compile(r"now use certificate serial ([0-9a-f]+)")


@dataclass
class SecureMesh:
    """A control plane in its secure mode, and what a workload is given out of band."""

    cp: ControlPlaneProc
    root: Path  # the pinned mesh root
    token_file: Path
    config: Path
    ports: dict[str, list[int]]

    def weights(self, v1: int) -> None:
        write_mesh(self.config, self.ports, {"reviews-v1": v1, "reviews-v2": 100 - v1})


def start_secure(tmp: Path, name: str, config: Path, control_plane_factory,
                 tokens: str) -> tuple[ControlPlaneProc, Path]:
    """``meshctl control-plane`` (secure) with its CA in ``tmp/name``, and its root."""
    token_file = tmp / f"{name}-tokens.yaml"
    token_file.write_text(tokens)
    token_file.chmod(0o600)
    cp = control_plane_factory(config, extra_args=[
        "--ca-dir", str(tmp / name), "--token-file", str(token_file)], secure=True)
    root = tmp / f"{name}-root.pem"
    root.write_bytes((tmp / name / CA_CERT_FILE).read_bytes())  # distributed out of band
    return cp, root


@pytest.fixture
def secure_mesh(tmp_path: Path, backends, control_plane_factory) -> SecureMesh:
    ports = {"reviews-v1": [backends("reviews-v1-a")], "reviews-v2": [backends("reviews-v2-a")]}
    config = tmp_path / "mesh"
    write_mesh(config, ports, {"reviews-v1": 100, "reviews-v2": 0})
    cp, root = start_secure(
        tmp_path, "ca", config, control_plane_factory,
        f"tokens:\n- serviceAccount: shop/web\n  token: {TOKEN}\n")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    return SecureMesh(cp, root, token_file, config, ports)


@dataclass
class AgentProc:
    proc: subprocess.Popen
    log: Path
    ready_file: Path
    address: str = ""

    def serials(self) -> list[str]:
        return SERIAL.findall(self.log.read_text())


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator:
    """``start(mesh, *args, ready=True)``: a ``meshctl agent`` process for ``mesh``'s
    identity shop/web, waited for until its ready file names its address."""
    agents: list[AgentProc] = []

    def start(mesh: SecureMesh, *args: str, ready: bool = True,
              identity: Sequence[str] = ("--service-account", "web", "--namespace", "shop"),
              ) -> AgentProc:
        n = len(agents)
        log, ready_file = tmp_path / f"agent-{n}.log", tmp_path / f"agent-{n}.ready"
        proc = subprocess.Popen(
            [*MESHCTL, "agent", "--xds-address", mesh.cp.xds_address,
             "--ca-address", mesh.cp.ca_address, "--ca-root", str(mesh.root),
             "--token-file", str(mesh.token_file), "--ready-file", str(ready_file),
             *identity, *args],
            stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
        agent = AgentProc(proc, log, ready_file)
        agents.append(agent)
        deadline = time.monotonic() + 20
        while ready and not ready_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"agent not ready: {log.read_text()}")
            time.sleep(0.02)
        if ready:
            agent.address = ready_file.read_text().strip()
        return agent

    yield start
    for agent in agents:
        stop_process(agent.proc)


def bootstrap(tmp: Path, address: str, node_id: str, namespace: str = "default") -> Path:
    path = tmp / f"{node_id}.json"
    subprocess.run([*MESHCTL, "bootstrap", "--xds-address", address, "--node-id", node_id,
                    "--namespace", namespace, "--output", str(path)], check=True, cwd=ROOT)
    return path


@pytest.fixture
def clients() -> Iterator[list]:
    started: list = []
    yield started
    for client in started:
        client.close()


def node_client(tmp: Path, clients: list, address: str, node_id: str,
                namespace: str = "default") -> NodeClient:
    client = NodeClient(bootstrap(tmp, address, node_id, namespace), tmp / f"{node_id}.log")
    clients.append(client)
    return client


def test_node_through_the_agent_on_a_unix_socket(tmp_path, secure_mesh, agent_factory,
                                                 clients):
    socket_path = tmp_path / "run" / "xds.sock"
    agent = agent_factory(secure_mesh, "--listen", f"unix:{socket_path}")
    assert agent.address == f"unix://{socket_path}"
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    assert f"agent ready on unix://{socket_path}" in agent.log.read_text()
    assert f"over mTLS as {IDENTITY}" in agent.log.read_text()

    # The bootstrap claims namespace "default"; the identity says "shop".
    client = node_client(tmp_path, clients, f"unix:{socket_path}", "node-via-agent")
    assert json.loads(bootstrap(tmp_path, f"unix:{socket_path}", "check").read_text())[
        "xds_servers"][0]["server_uri"] == f"unix://{socket_path}"
    first = client.send(op="wait_for", target=TARGET, backend="reviews-v1", timeout=10)
    assert first["ok"], first
    assert client.send(op="calls", target=TARGET, n=20) == {
        "counts": {"reviews-v1-a": 20}, "errors": {}}

    secure_mesh.weights(0)  # pushed through the agent too
    assert client.send(op="wait_for", target=TARGET, backend="reviews-v2", timeout=10,
                       consecutive=10)["ok"]
    cp = secure_mesh.cp
    assert cp.metric("meshlib_xds_nacks_total") == 0
    assert cp.metric("meshlib_xds_acks_total", type="RDS") >= 2

    # The namespace the control plane serves is the certificate's, not the bootstrap's.
    status, body = cp.admin("/debug/config_dump?node=node-via-agent")
    assert status == 200, body
    assert json.loads(body)["group"].startswith("grpc/shop"), body

    # SIGTERM: a clean stop, its socket and ready file gone.
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=5) == 0
    assert not socket_path.exists() and not agent.ready_file.exists()


def test_native_grpc_through_the_agent_on_loopback(tmp_path, secure_mesh, agent_factory,
                                                   clients):
    agent = agent_factory(secure_mesh, "--listen", "127.0.0.1:0")
    assert re.fullmatch(r"127\.0\.0\.1:\d+", agent.address), agent.address
    client = NativeClient(bootstrap(tmp_path, agent.address, "native-via-agent"),
                          tmp_path / "native.log")
    clients.append(client)
    result = client.send(op="calls", target=TARGET, n=5, wait_for_ready=True, timeout=10)
    assert result == {"counts": {"reviews-v1-a": 5}, "errors": {}}, result


def test_a_control_plane_the_pinned_root_does_not_vouch_for(tmp_path, secure_mesh,
                                                            agent_factory,
                                                            control_plane_factory):
    """An impostor with its own CA on the addresses the agent was given: the agent
    refuses it before the token leaves, and says why."""
    impostor, _ = start_secure(
        tmp_path, "impostor-ca", secure_mesh.config, control_plane_factory,
        f"tokens:\n- serviceAccount: shop/web\n  token: {TOKEN}\n")
    fake = SecureMesh(impostor, secure_mesh.root, secure_mesh.token_file, secure_mesh.config,
                      secure_mesh.ports)
    agent = agent_factory(fake, ready=False)
    assert agent.proc.wait(timeout=15) == 1
    out = agent.log.read_text()
    assert "failed TLS verification against the pinned CA root" in out, out
    assert "the token was not sent" in out, out
    assert not agent.ready_file.exists()
    assert impostor.metric("meshlib_ca_certificates_total") == 0  # no request reached it


def test_after_a_rotation_the_stream_keeps_working_and_new_streams_use_the_new_cert(
        tmp_path, secure_mesh, agent_factory, clients):
    out_dir = tmp_path / "certs"
    agent = agent_factory(secure_mesh, "--listen", "127.0.0.1:0", "--ttl", "4",
                          "--out-dir", str(out_dir))
    first_cert = (out_dir / "cert.pem").read_bytes()
    client = node_client(tmp_path, clients, agent.address, "node-rotating")
    assert client.send(op="wait_for", target=TARGET, backend="reviews-v1", timeout=10)["ok"]

    deadline = time.monotonic() + 10  # renewal at half of 4 s, ±10 %
    while len(agent.serials()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    serials = agent.serials()
    assert len(serials) >= 2 and serials[0] != serials[-1], agent.log.read_text()
    for _ in range(100):  # the files are rewritten after the channel switch
        if (out_dir / "cert.pem").read_bytes() != first_cert:
            break
        time.sleep(0.02)
    assert (out_dir / "cert.pem").read_bytes() != first_cert
    assert stat.S_IMODE((out_dir / "key.pem").stat().st_mode) == 0o600

    # The stream opened before the rotation still carries pushes...
    secure_mesh.weights(0)
    assert client.send(op="wait_for", target=TARGET, backend="reviews-v2", timeout=10,
                       consecutive=10)["ok"]
    # ...and a new stream, on the new certificate's channel, works too.
    late = node_client(tmp_path, clients, agent.address, "node-after-rotation")
    assert late.send(op="wait_for", target=TARGET, backend="reviews-v2", timeout=10)["ok"]
    assert secure_mesh.cp.metric("meshlib_xds_nacks_total") == 0
