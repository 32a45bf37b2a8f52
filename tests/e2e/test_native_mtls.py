"""mTLS and authorization over standard xDS, with gRPC's native xDS client and server as
the judge (gRFC A29 TLS contexts, A41 RBAC).

The real `meshctl control-plane` reads the mesh from files; every workload is a process
of its own (`native_mtls_peer.py`) with a bootstrap from `meshctl bootstrap --cert-dir`
and certificates the mesh CA issued from CSRs made here. One server per mTLS mode
(STRICT `reviews`, PERMISSIVE `ratings`, DISABLE `details`); `reviews` is also reached
as `reviews-impostor`, a Service over the same endpoint annotated with another service
account, so clients must refuse the server's certificate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshlib.contract import SpiffeId
from tests.e2e.conftest import (
    MESHCTL,
    NATIVE_GRPC_ENV,
    ROOT,
    ControlPlaneProc,
    free_port,
    start_control_plane,
    stop_process,
)
from xds_server.bootstrap import CA_FILE, CERT_FILE, KEY_FILE
from xds_server.ca import CertificateAuthority

PEER = Path(__file__).parent / "native_mtls_peer.py"
TARGET = "xds:///reviews:50051"
METHOD = "/demo.Reviews/Get"
FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"
INTRUDER = "spiffe://cluster.local/ns/default/sa/intruder"
SERVERS = ("reviews", "ratings", "details")


def issue_certs(ca: CertificateAuthority, directory: Path, account: str) -> Path:
    """key.pem / cert.pem / ca.pem for ``account`` in ``default``, from a CSR made here."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    issued = ca.issue(csr, SpiffeId("cluster.local", "default", account))
    directory.mkdir(parents=True)
    (directory / KEY_FILE).write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (directory / CERT_FILE).write_bytes(issued.cert_pem)
    (directory / CA_FILE).write_bytes(ca.roots_pem())
    return directory


def services_yaml(ports: dict[str, int]) -> str:
    """reviews (its identity from its name, the default), reviews-impostor (the same
    endpoint, annotated with another account), ratings and details."""
    def service(name: str, port: int, annotations: str = "") -> str:
        return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default, annotations: {{{annotations}}}}}
spec:
  ports: [{{name: grpc, port: 50051, appProtocol: grpc}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: grpc, port: {port}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"""

    return (service("reviews", ports["reviews"])
            + service("reviews-impostor", ports["reviews"],
                      "meshlib.dev/service-accounts: ratings")
            + service("ratings", ports["ratings"])
            + service("details", ports["details"]))


def policy_yaml(target: str, mode: str, rules: str = "") -> str:
    return f"""---
apiVersion: meshlib.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: {target}, namespace: default}}
spec:
  targetRef: {{kind: Service, name: {target}}}
  mtls: {{mode: {mode}}}
{rules}"""


def policies_yaml(denied: str) -> str:
    """STRICT reviews: DENY ``denied`` (in any namespace: a regex principal), ALLOW the
    default namespace (a prefix) to /demo.Reviews/* (a prefix), and an ALLOW rule with
    regexes on both sides that matches no caller here (gRPC must still accept it)."""
    rules = f"""  rules:
    - action: DENY
      from: [{{serviceAccounts: ["*/{denied}"]}}]
    - action: ALLOW
      from: [{{namespaces: [default]}}]
      to: [{{methods: ["/demo.Reviews/*"]}}]
    - action: ALLOW
      from: [{{identities: ["spiffe://cluster.local/ns/*/sa/nobody"]}}]
      to: [{{methods: ["/demo.*/Get"]}}]
"""
    return (policy_yaml("reviews", "STRICT", rules) + policy_yaml("reviews-impostor", "STRICT")
            + policy_yaml("ratings", "PERMISSIVE") + policy_yaml("details", "DISABLE"))


class Peer:
    """A native_mtls_peer.py process with its own bootstrap."""

    def __init__(self, cp: ControlPlaneProc, work: Path, node_id: str, *args: str,
                 cert_dir: Path | None = None) -> None:
        bootstrap = work / f"{node_id}.json"
        tls = ["--cert-dir", str(cert_dir)] if cert_dir else []
        subprocess.run([*MESHCTL, "bootstrap", "--xds-address", cp.xds_address,
                        "--node-id", node_id, *tls, "--output", str(bootstrap)],
                       check=True, cwd=ROOT)
        self.log = work / f"{node_id}.log"
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap), **NATIVE_GRPC_ENV}
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([sys.executable, str(PEER), *args], env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, text=True)

    def send(self, **cmd: object) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"peer died: {self.log.read_text()}"
        return json.loads(line)

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[dict]:
    """The control plane, three servers (STRICT reviews, PERMISSIVE ratings, DISABLE
    details) and three clients: frontend, intruder (both with certificates) and
    plaintext (without)."""
    work = tmp_path_factory.mktemp("mtls")
    ca = CertificateAuthority.create()
    certs = {sa: issue_certs(ca, work / f"{sa}-certs", sa)
             for sa in ("reviews", "ratings", "details", "frontend", "intruder")}
    ports = {name: free_port() for name in SERVERS}
    config = work / "mesh"
    config.mkdir()
    (config / "services.yaml").write_text(services_yaml(ports))
    (config / "policies.yaml").write_text(policies_yaml("intruder"))
    cp = start_control_plane(config, work / "control-plane.log")
    peers: list[Peer] = []
    try:
        for name in SERVERS:
            peers.append(Peer(cp, work, f"{name}-0", "server", "--name", f"{name}-0",
                              "--port", str(ports[name]), cert_dir=certs[name]))
        clients = {
            "frontend": Peer(cp, work, "frontend-0", "client", cert_dir=certs["frontend"]),
            "intruder": Peer(cp, work, "intruder-0", "client", cert_dir=certs["intruder"]),
            "plaintext": Peer(cp, work, "plaintext-0", "client"),
        }
        peers.extend(clients.values())
        # A server serves once it has its Listener; the frontend gets through then.
        for name in SERVERS:
            first = clients["frontend"].send(op="wait_for", target=f"xds:///{name}:50051",
                                             code="OK", timeout=20)
            assert first["code"] == "OK", (name, first)
        yield {"cp": cp, "config": config, **clients}
    finally:
        for peer in peers:
            peer.stop()
        stop_process(cp.proc)


SAN_MISMATCH = "SANs from certificate did not match SANs from xDS control plane"
REACHED = "ipv4:127.0.0.1:"  # in the error: the call got as far as the endpoint


@pytest.mark.parametrize(("client", "target", "method", "code", "expected"), [
    pytest.param("frontend", "reviews", METHOD, "OK", f"reviews-0 {FRONTEND}",
                 id="strict-mtls-server-sees-client-identity"),
    pytest.param("frontend", "reviews-impostor", METHOD, "UNAVAILABLE", SAN_MISMATCH,
                 id="server-identity-outside-san-list-refused"),
    pytest.param("intruder", "reviews", METHOD, "PERMISSION_DENIED", "Unauthorized",
                 id="deny-rule"),
    pytest.param("frontend", "reviews", "/grpc.health.v1.Health/Check", "PERMISSION_DENIED",
                 "Unauthorized", id="allow-rules-limit-methods"),
    # The plaintext client resolves the endpoint and is refused at the connection.
    pytest.param("plaintext", "reviews", METHOD, "UNAVAILABLE", REACHED,
                 id="no-certificates-no-strict"),
    pytest.param("frontend", "ratings", METHOD, "OK", f"ratings-0 {FRONTEND}",
                 id="permissive-takes-mtls"),
    # gRFC A36: no TLS sniffing, so a PERMISSIVE native server is TLS-only.
    pytest.param("plaintext", "ratings", METHOD, "UNAVAILABLE", REACHED,
                 id="permissive-native-server-no-plaintext"),
    pytest.param("frontend", "details", METHOD, "OK", "details-0 -", id="disable-plaintext"),
    pytest.param("plaintext", "details", METHOD, "OK", "details-0 -",
                 id="disable-plaintext-client"),
])
def test_native_grpc_enforces_mtls_and_rbac(mesh, client, target, method, code, expected):
    result = mesh[client].send(op="call", target=f"xds:///{target}:50051", method=method)
    assert result["code"] == code, result
    assert expected in (result.get("reply") or result.get("details") or ""), result


def test_no_nacks(mesh):
    cp = mesh["cp"]
    assert cp.metric("meshlib_xds_nacks_total") == 0, cp.log.read_text()
    assert cp.metric("meshlib_xds_acks_total", type="CDS") >= 1
    assert cp.metric("meshlib_xds_acks_total", type="LDS") >= 1


def test_access_policy_edit_applies_live(mesh):
    (mesh["config"] / "policies.yaml").write_text(policies_yaml("frontend"))
    try:
        denied = mesh["frontend"].send(op="wait_for", target=TARGET,
                                       code="PERMISSION_DENIED", timeout=15)
        assert denied["code"] == "PERMISSION_DENIED", denied
        allowed = mesh["intruder"].send(op="wait_for", target=TARGET, code="OK", timeout=15)
        assert allowed == {"code": "OK", "reply": f"reviews-0 {INTRUDER}"}
    finally:
        (mesh["config"] / "policies.yaml").write_text(policies_yaml("intruder"))
    assert mesh["cp"].metric("meshlib_xds_nacks_total") == 0
