"""mTLS between meshlib services, end to end: the real control plane process with its
CA, meshlib servers and clients with certificates from it, real TLS on loopback."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from cryptography import x509

import meshlib
from meshlib.contract import SpiffeId
from meshlib.security._certificates import WorkloadCertificate, make_key_and_csr, write_files
from tests.e2e.conftest import free_port
from tests.e2e.mesh_files import service_yaml
from xds_server.ca import CA_CERT_FILE, CertificateAuthority

WHO = "/demo.Who/Am"
TOKENS = {"frontend": "frontend-token-0123456789", "reviews": "reviews-token-0123456789",
          "intruder": "intruder-token-0123456789"}


def _identity(b: bytes) -> bytes:
    return b


@dataclass
class Seen:
    """What the server saw of its callers."""

    peers: list[str | None] = field(default_factory=list)
    serials: set[int] = field(default_factory=set)
    expired_presented: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        peer = meshlib.peer_identity(context)
        pem = context.auth_context().get("x509_pem_cert")
        with self.lock:
            self.peers.append(str(peer) if peer else None)
            if pem:
                cert = x509.load_pem_x509_certificate(pem[0])
                self.serials.add(cert.serial_number)
                if cert.not_valid_after_utc.timestamp() <= time.time():
                    self.expired_presented += 1
        return json.dumps({"peer": str(peer) if peer else None}).encode()

    def generic(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler("demo.Who", {
            "Am": grpc.unary_unary_rpc_method_handler(self.handler, _identity, _identity)})


@dataclass
class SecureMesh:
    cp: object
    directory: Path
    port: int
    root: Path | None = None  # the pinned root of a secure control plane
    meshes: list[meshlib.Mesh] = field(default_factory=list)
    servers: list[object] = field(default_factory=list)

    @property
    def xds(self) -> str:
        return self.cp.xds_address  # type: ignore[attr-defined]

    def mesh(self, service: str, **kwargs: object) -> meshlib.Mesh:
        if "token" not in kwargs and "cert_dir" not in kwargs and service in TOKENS:
            kwargs["token"] = TOKENS[service]
        if self.root is not None:  # a secure control plane: pin its root, use its CA port
            kwargs.setdefault("ca_root", str(self.root))
            kwargs.setdefault("ca_address", self.cp.ca_address)  # type: ignore[attr-defined]
        mesh = meshlib.Mesh(self.xds, service=service, **kwargs)  # type: ignore[arg-type]
        self.meshes.append(mesh)
        return mesh

    def serve(self, mesh: meshlib.Mesh, seen: Seen, **kwargs: object):  # type: ignore[no-untyped-def]
        server = mesh.server("reviews", port=self.port, host="127.0.0.1", **kwargs)
        server.add_generic_rpc_handlers((seen.generic(),))
        server.start()
        self.servers.append(server)
        return server


def call(channel: grpc.Channel, timeout: float = 5.0) -> dict:
    return json.loads(channel.unary_unary(WHO, _identity, _identity)(b"", timeout=timeout))


def policy_yaml(mode: str, rules: str = "") -> str:
    return f"""---
apiVersion: meshlib.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: reviews, namespace: default}}
spec:
  targetRef: {{kind: Service, name: reviews}}
  mtls: {{mode: {mode}}}
{rules}"""


@pytest.fixture
def secure_mesh(tmp_path: Path, control_plane_factory) -> Iterator:
    made: list[SecureMesh] = []

    def start(mode: str = "STRICT", rules: str = "", extra: str = "", *,
              secure: bool = True) -> SecureMesh:
        """The control plane secure (ADS over mTLS, the CA over TLS, the root pinned by
        every Mesh) unless ``secure=False`` (plaintext, for Meshes without identity)."""
        port = free_port()
        directory = tmp_path / "mesh"
        directory.mkdir()
        (directory / "services.yaml").write_text(
            service_yaml("reviews", [port]) + service_yaml("frontend", [free_port()]))
        (directory / "policy.yaml").write_text(policy_yaml(mode, rules))
        (directory / "extra.yaml").write_text(extra)
        tokens = tmp_path / "tokens.yaml"
        tokens.write_text("tokens:\n" + "".join(
            f"- serviceAccount: default/{sa}\n  token: {token}\n" for sa, token in TOKENS.items()))
        tokens.chmod(0o600)
        cp = control_plane_factory(directory, extra_args=[
            "--ca-dir", str(tmp_path / "ca"), "--token-file", str(tokens)], secure=secure)
        root = None
        if secure:
            root = tmp_path / "ca-root.pem"
            root.write_bytes((tmp_path / "ca" / CA_CERT_FILE).read_bytes())  # out of band
        env = SecureMesh(cp, directory, port, root)
        made.append(env)
        return env

    yield start
    for env in made:
        for server in env.servers:
            server.stop(None)  # type: ignore[attr-defined]
        for mesh in env.meshes:
            mesh.close()


def test_meshlib_to_meshlib_over_mtls(secure_mesh):
    env = secure_mesh("STRICT")
    seen = Seen()
    server_mesh = env.mesh("reviews")
    server = env.serve(server_mesh, seen)
    assert server.mtls_mode == "STRICT"
    assert server_mesh.first_certificate_seconds is not None
    client = env.mesh("frontend")
    assert call(client.channel("reviews")) == {
        "peer": "spiffe://cluster.local/ns/default/sa/frontend"}
    assert client.identity == SpiffeId("cluster.local", "default", "frontend")


def test_strict_refuses_plaintext_clients(secure_mesh):
    env = secure_mesh("STRICT", secure=False)  # a Mesh without identity gets config
    seen = Seen()
    env.serve(env.mesh("reviews"), seen)
    plaintext = env.mesh("frontend", token=None)  # no identity: plaintext
    with pytest.raises(grpc.RpcError) as err:
        call(plaintext.channel("reviews"), timeout=2)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(f"127.0.0.1:{env.port}") as bare, \
            pytest.raises(grpc.RpcError) as err:
        call(bare, timeout=2)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert seen.peers == []


def test_a_certificate_from_another_ca_is_refused(secure_mesh, tmp_path):
    env = secure_mesh("STRICT", secure=False)  # a secure one would not even talk xDS to it
    seen = Seen()
    env.serve(env.mesh("reviews"), seen)
    rogue_ca = CertificateAuthority.create()
    identity = SpiffeId("cluster.local", "default", "frontend")
    key_pem, csr_pem = make_key_and_csr(identity)
    issued = rogue_ca.issue(csr_pem, identity)
    write_files(tmp_path / "rogue",
                WorkloadCertificate.from_pem(key_pem, issued.cert_pem, rogue_ca.roots_pem()))
    rogue = env.mesh("frontend", cert_dir=str(tmp_path / "rogue"))
    with pytest.raises(grpc.RpcError) as err:
        call(rogue.channel("reviews"), timeout=2)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert seen.peers == []


def test_an_identity_not_allowed_gets_permission_denied(secure_mesh):
    env = secure_mesh("STRICT", rules="""  rules:
    - action: ALLOW
      from: [{serviceAccounts: [default/frontend]}]
""")
    seen = Seen()
    env.serve(env.mesh("reviews"), seen)
    assert call(env.mesh("frontend").channel("reviews"))["peer"].endswith("/sa/frontend")
    intruder = env.mesh("intruder")
    with pytest.raises(grpc.RpcError) as err:
        call(intruder.channel("reviews"))
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "frontend" not in (err.value.details() or "")  # the reason is not leaked
    assert len(seen.peers) == 1


def test_permissive_takes_mtls_and_plaintext_on_one_port(secure_mesh):
    env = secure_mesh("PERMISSIVE")
    seen = Seen()
    server = env.serve(env.mesh("reviews"), seen)
    assert server.mtls_mode == "PERMISSIVE"
    assert call(env.mesh("frontend").channel("reviews"))["peer"].endswith("/sa/frontend")
    with grpc.insecure_channel(f"127.0.0.1:{env.port}") as bare:
        assert call(bare) == {"peer": None}


def test_a_client_follows_a_live_mode_change(secure_mesh):
    env = secure_mesh("PERMISSIVE")
    env.serve(env.mesh("reviews"), Seen())  # PERMISSIVE takes both, whatever comes next
    who = env.mesh("frontend").channel("reviews").unary_unary(WHO, _identity, _identity)

    def peer() -> str | None:
        return json.loads(who(b"", timeout=5))["peer"]
    assert peer().endswith("/sa/frontend")  # type: ignore[union-attr]
    (env.directory / "policy.yaml").write_text(policy_yaml("DISABLE"))
    deadline = time.monotonic() + 10
    while peer() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert peer() is None  # plaintext now: the multicallable dropped its TLS channel


def test_disable_serves_plaintext(secure_mesh):
    env = secure_mesh("DISABLE")
    seen = Seen()
    server = env.serve(env.mesh("reviews"), seen)
    assert server.mtls_mode == "DISABLE"
    assert call(env.mesh("frontend").channel("reviews")) == {"peer": None}


def _server_serial(port: int, client: WorkloadCertificate, tmp: Path) -> tuple[int, float]:
    """Handshake with the server as gRPC would and read the certificate it presents."""
    tmp.mkdir(exist_ok=True)
    write_files(tmp, client)
    context = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    context.check_hostname = False
    context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
            context.wrap_socket(raw) as tls:
        cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    return cert.serial_number, cert.not_valid_after_utc.timestamp()


def run_rotation(secure_mesh, tmp_path: Path, *, seconds: float, ttl: float) -> None:
    env = secure_mesh("STRICT")
    seen = Seen()
    server_mesh = env.mesh("reviews", cert_ttl=ttl)
    env.serve(server_mesh, seen)
    client = env.mesh("frontend", cert_ttl=ttl)
    channel = client.channel("reviews")
    call(channel)
    failures: list[str] = []
    calls = [0]
    stop = time.monotonic() + seconds

    def traffic() -> None:
        stub = channel.unary_unary(WHO, _identity, _identity)
        while time.monotonic() < stop:
            try:
                stub(b"", timeout=5)
                calls[0] += 1
            except grpc.RpcError as err:
                failures.append(f"{err.code()}: {err.details()}")
            time.sleep(0.005)  # ~4 threads x ~100/s

    server_serials: set[int] = set()
    presented_expired = 0
    with futures.ThreadPoolExecutor(4) as pool:
        running = [pool.submit(traffic) for _ in range(4)]
        while time.monotonic() < stop:
            serial, not_after = _server_serial(env.port, client.certificates.current,
                                               tmp_path / "probe")
            server_serials.add(serial)
            presented_expired += not_after <= time.time()
            time.sleep(0.25)
        for f in running:
            f.result()
    rate = calls[0] / seconds
    assert failures == []
    assert rate >= 200, f"only {rate:.0f} calls/s"
    assert len(seen.serials) >= 3, "the client's certificate should have rotated"
    assert len(server_serials) >= 3, "the server's certificate should have rotated"
    assert seen.expired_presented == 0 and presented_expired == 0
    assert client.certificates.rotations >= 2 and server_mesh.certificates.rotations >= 2
    # connections are reused: one secure channel per endpoint per certificate
    assert client.clients.pool.handshake_channels <= client.certificates.rotations + 1
    print(f"\nrotation: {calls[0]} calls in {seconds:.0f} s ({rate:.0f}/s), 0 failed; "
          f"client serials seen by the server {len(seen.serials)}, server serials "
          f"presented {len(server_serials)}, client rotations "
          f"{client.certificates.rotations}, secure channels opened "
          f"{client.clients.pool.handshake_channels}")


def test_rotation_under_traffic_fails_no_call(secure_mesh, tmp_path):
    run_rotation(secure_mesh, tmp_path, seconds=8.0, ttl=3.0)


@pytest.mark.slow
def test_rotation_every_few_seconds_for_30s(secure_mesh, tmp_path):
    run_rotation(secure_mesh, tmp_path, seconds=30.0, ttl=4.0)


async def test_aio_server_and_aio_channel_over_mtls(secure_mesh):
    env = secure_mesh("STRICT", rules="""  rules:
    - action: DENY
      from: [{serviceAccounts: [intruder]}]
""")
    server_mesh = env.mesh("reviews")
    server = server_mesh.aio_server("reviews", port=env.port, host="127.0.0.1")

    async def who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return str(meshlib.peer_identity(context)).encode()

    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("demo.Who", {
        "Am": grpc.unary_unary_rpc_method_handler(who, _identity, _identity)}),))
    await server.start()
    try:
        channel = env.mesh("frontend").aio_channel("reviews")
        reply = await channel.unary_unary(WHO, _identity, _identity)(b"", timeout=5)
        assert reply == b"spiffe://cluster.local/ns/default/sa/frontend"
        intruder = env.mesh("intruder").aio_channel("reviews")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await intruder.unary_unary(WHO, _identity, _identity)(b"", timeout=5)
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    finally:
        await server.stop(None)


def test_local_rate_limit_per_caller_identity(secure_mesh):
    env = secure_mesh("STRICT", extra="""---
apiVersion: meshlib.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: reviews, namespace: default}
spec:
  targetRef: {kind: Service, name: reviews}
  rateLimit: {requestsPerSecond: 0.5, burst: 2}
""")
    env.serve(env.mesh("reviews"), Seen())
    who = env.mesh("frontend").channel("reviews").unary_unary(WHO, _identity, _identity)
    who(b"", timeout=5)
    who(b"", timeout=5)  # the burst
    with pytest.raises(grpc.RpcError) as err:
        who(b"", timeout=5)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    pushback = int(dict(err.value.trailing_metadata() or ())["grpc-retry-pushback-ms"])
    assert 1500 <= pushback <= 2000  # a token every 2 s
    assert f"retry in {pushback} ms" in (err.value.details() or "")
    # Another caller has a bucket of its own.
    other = env.mesh("intruder").channel("reviews").unary_unary(WHO, _identity, _identity)
    assert json.loads(other(b"", timeout=5))["peer"].endswith("/sa/intruder")


def test_server_golden_metrics_are_scraped(secure_mesh):
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    env = secure_mesh("STRICT", rules="""  rules:
    - action: DENY
      from: [{serviceAccounts: [intruder]}]
""")
    server_mesh = env.mesh("reviews")
    env.serve(server_mesh, Seen())
    port = server_mesh.serve_metrics()
    ok = env.mesh("frontend").channel("reviews").unary_unary(WHO, _identity, _identity)
    for _ in range(7):
        ok(b"", timeout=5)
    bad = env.mesh("intruder").channel("reviews").unary_unary(WHO, _identity, _identity)
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            bad(b"", timeout=5)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    counts: dict[tuple[str, str], float] = {}
    durations = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "meshlib_server_requests_total":
                assert sample.labels["destination_service"] == "reviews"
                assert sample.labels["method"] == WHO
                counts[(sample.labels["code"], sample.labels["source_identity"])] = sample.value
            if sample.name == "meshlib_server_request_duration_seconds_count":
                durations += sample.value
    assert counts == {("OK", "default/frontend"): 7,
                      ("PERMISSION_DENIED", "default/intruder"): 3}
    assert durations == 10
