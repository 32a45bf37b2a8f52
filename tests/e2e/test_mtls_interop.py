"""meshlib ↔ gRPC's native xDS client and server, over mTLS from one control plane.

The native side runs in processes of its own (`native_mtls_peer.py`), bootstrapped by
`meshctl bootstrap --cert-dir` with certificates from `meshctl certs issue` — the way a
workload that does not run meshlib joins. meshlib gets its certificates from the same
CA with a token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

import meshlib
from tests.e2e.conftest import MESHCTL, NATIVE_GRPC_ENV, ROOT, free_port, stop_process
from tests.e2e.mesh_files import service_yaml

PEER = Path(__file__).parent / "native_mtls_peer.py"
METHOD = "/demo.Reviews/Get"
TOKENS = {"frontend": "frontend-token-0123456789", "reviews": "reviews-token-0123456789",
          "ratings": "ratings-token-0123456789", "native-client": "native-token-0123456789"}


def _identity(b: bytes) -> bytes:
    return b


def strict(name: str) -> str:
    return f"""---
apiVersion: meshlib.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  targetRef: {{kind: Service, name: {name}}}
  mtls: {{mode: STRICT}}
"""


# gRPC's xDS server has no local rate limit: the filter is optional, so it must accept
# the Listener (a NACK would leave the native server unserved) and skip the filter.
# MeshConfig's tracing and access logs ride on every HttpConnectionManager: gRPC's native
# client and server must accept them (0 NACKs, asserted at teardown).
OBSERVED = """---
apiVersion: meshlib.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  tracing: {sampling: 0.25}
  accessLogs: {enabled: true}
"""
RATINGS_LIMIT = """---
apiVersion: meshlib.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: ratings, namespace: default}
spec:
  targetRef: {kind: Service, name: ratings}
  rateLimit: {requestsPerSecond: 1000, burst: 100}
"""


@pytest.fixture
def interop(tmp_path: Path, control_plane_factory):
    ports = {"reviews": free_port(), "ratings": free_port()}
    config = tmp_path / "mesh"
    config.mkdir()
    (config / "mesh.yaml").write_text(
        service_yaml("reviews", [ports["reviews"]]) + service_yaml("ratings", [ports["ratings"]])
        + strict("reviews") + strict("ratings") + RATINGS_LIMIT + OBSERVED)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n" + "".join(
        f"- serviceAccount: default/{sa}\n  token: {t}\n" for sa, t in TOKENS.items()))
    tokens.chmod(0o600)
    cp = control_plane_factory(config, extra_args=["--ca-dir", str(tmp_path / "ca"),
                                                   "--token-file", str(tokens)])
    procs: list[subprocess.Popen] = []
    meshes: list[meshlib.Mesh] = []

    def native(role: str, account: str, *args: str) -> subprocess.Popen:
        certs = tmp_path / f"certs-{account}"
        token_file = tmp_path / f"token-{account}"
        token_file.write_text(TOKENS[account])
        issued = subprocess.run(
            [*MESHCTL, "certs", "issue", "--xds-address", cp.xds_address,
             "--service-account", account, "--token-file", str(token_file),
             "--out-dir", str(certs)], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert issued.returncode == 0, issued.stderr
        assert f"spiffe://cluster.local/ns/default/sa/{account}" in issued.stdout
        bootstrap = tmp_path / f"bootstrap-{account}.json"
        subprocess.run([*MESHCTL, "bootstrap", "--xds-address", cp.xds_address,
                        "--node-id", f"native-{account}", "--cert-dir", str(certs),
                        "--output", str(bootstrap)], cwd=ROOT, check=True)
        env = {**os.environ, **NATIVE_GRPC_ENV, "GRPC_XDS_BOOTSTRAP": str(bootstrap)}
        proc = subprocess.Popen([sys.executable, str(PEER), role, *args], env=env, cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    def mesh(service: str, **kwargs: object) -> meshlib.Mesh:
        m = meshlib.Mesh(cp.xds_address, service=service, token=TOKENS.get(service),
                         **kwargs)  # type: ignore[arg-type]
        meshes.append(m)
        return m

    yield ports, native, mesh
    assert cp.metric("meshlib_xds_nacks_total") == 0
    for m in meshes:
        m.close()
    for proc in procs:
        stop_process(proc)


def test_meshlib_client_calls_a_native_xds_server_over_mtls(interop):
    ports, native, mesh = interop
    server = native("server", "ratings", "--name", "ratings-0", "--port", str(ports["ratings"]))
    assert server.stdout is not None and server.stdout.readline().strip() == "started"
    client = mesh("frontend")
    get = client.channel("ratings").unary_unary(METHOD, _identity, _identity)
    reply = get(b"", timeout=10).decode()
    assert reply == "ratings-0 spiffe://cluster.local/ns/default/sa/frontend"
    plaintext = mesh("anonymous")  # no identity: refused by the STRICT native server
    with pytest.raises(grpc.RpcError) as err:
        plaintext.channel("ratings").unary_unary(METHOD, _identity, _identity)(b"", timeout=3)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


def test_native_xds_client_calls_a_meshlib_server_over_mtls(interop):
    ports, native, mesh = interop
    server_mesh = mesh("reviews")
    server = server_mesh.server("reviews", port=ports["reviews"], host="127.0.0.1")

    def get(request: bytes, context: grpc.ServicerContext) -> bytes:
        return f"meshlib {meshlib.peer_identity(context)}".encode()

    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "demo.Reviews", {"Get": grpc.unary_unary_rpc_method_handler(get)}),))
    server.start()
    try:
        assert server.mtls_mode == "STRICT"
        client = native("client", "native-client")
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(json.dumps({"op": "wait_for", "target": "xds:///reviews:50051",
                                       "code": "OK", "timeout": 15}) + "\n")
        client.stdin.flush()
        result = json.loads(client.stdout.readline())
        assert result == {"code": "OK", "reply":
                          "meshlib spiffe://cluster.local/ns/default/sa/native-client"}
    finally:
        server.stop(None)
