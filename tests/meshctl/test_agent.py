"""``meshctl agent``'s forwarding, in process: real gRPC on loopback and real mTLS, the
control plane replaced by a recording upstream that answers raw bytes.

What travels is checked byte for byte (no re-encoding), and so are the status codes,
details and trailers coming back, a cancel going up, and which certificate each
upstream stream was opened with around a rotation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import json
import os
import socket
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from meshctl.agent import (
    ADS_SERVICE,
    Agent,
    AgentOptions,
    first_certificate,
    parse_listen,
)
from meshctl.cli import main
from meshlib.contract import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    BindError,
    CertificateError,
    SpiffeId,
)
from meshlib.security import (
    CertificateSource,
    IssuedCertificates,
    WorkloadCertificate,
    make_key_and_csr,
)
from xds_server.ca import CertificateAuthority, ServingCertificates

SOTW = f"/{ADS_SERVICE}/StreamAggregatedResources"
DELTA = f"/{ADS_SERVICE}/DeltaAggregatedResources"
IDENTITY = SpiffeId("cluster.local", "shop", "web")


def issue(ca: CertificateAuthority, identity: SpiffeId = IDENTITY) -> WorkloadCertificate:
    key_pem, csr_pem = make_key_and_csr(identity)
    issued = ca.issue(csr_pem, identity, ttl=dt.timedelta(hours=1))
    return WorkloadCertificate.from_pem(key_pem, issued.cert_pem, ca.roots_pem())


class StaticCertificates(CertificateSource):
    """Certificates the test installs by hand."""

    def install(self, cert: WorkloadCertificate) -> None:
        self._install(cert)

    async def run(self) -> None:
        await asyncio.Event().wait()


@dataclass
class Upstream:
    """A stand-in control plane: mTLS with client certificates required; per stream it
    records the client certificate's serial and echoes every request back, except
    ``abort:CODE`` (ends the stream with CODE, details and a trailer), ``hang`` (waits
    to be cancelled) and ``meta`` (answers the request metadata keys)."""

    serials: list[int] = field(default_factory=list)
    hanging: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, requests: AsyncIterator[bytes],
                     context: grpc.aio.ServicerContext) -> None:
        pem = context.auth_context()["x509_pem_cert"][0]
        self.serials.append(x509.load_pem_x509_certificate(pem).serial_number)
        await context.send_initial_metadata((("x-upstream", "yes"),))
        async for request in requests:
            if request.startswith(b"abort:"):
                await context.abort(grpc.StatusCode[request[6:].decode()], "upstream says no",
                                    trailing_metadata=(("x-why", "because"),))
            elif request == b"hang":
                self.hanging.set()
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    self.cancelled.set()
                    raise
            elif request == b"meta":
                keys = sorted(k for k, _ in context.invocation_metadata())
                await context.write(",".join(keys).encode())
            else:
                await context.write(request)
        context.set_trailing_metadata((("x-done", "ok"),))


async def start_upstream(ca: CertificateAuthority,
                         upstream: Upstream) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(upstream.handle)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        ADS_SERVICE, {"StreamAggregatedResources": handler,
                      "DeltaAggregatedResources": handler})])
    creds = ServingCertificates(ca, ["localhost", "127.0.0.1"]).credentials(
        require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


@pytest.fixture
def root(tmp_path: Path, ca: CertificateAuthority) -> Path:
    path = tmp_path / "root.pem"
    path.write_bytes(ca.roots_pem())
    return path


@pytest.fixture
async def upstream(ca: CertificateAuthority) -> AsyncIterator[tuple[Upstream, str]]:
    recorder = Upstream()
    server, address = await start_upstream(ca, recorder)
    yield recorder, address
    await server.stop(0)


@pytest.fixture
async def agent_factory(tmp_path: Path) -> AsyncIterator:
    agents: list[Agent] = []

    async def start(address: str, cert: WorkloadCertificate | None, root: Path | None,
                    **options: object) -> tuple[Agent, StaticCertificates]:
        certificates = StaticCertificates()
        if cert is not None:
            certificates.install(cert)
        options.setdefault("listen", parse_listen("127.0.0.1:0"))
        agent = Agent(AgentOptions(xds_address=address, ca_root=root, **options),  # type: ignore[arg-type]
                      certificates)
        await agent.start()
        agents.append(agent)
        return agent, certificates

    yield start
    for agent in agents:
        await agent.stop(grace=0)


async def exchange(target: str, method: str, messages: list[bytes], *,
                   metadata: tuple[tuple[str, str], ...] = ()
                   ) -> tuple[list[bytes], grpc.StatusCode, str, dict[str, str]]:
    """Send ``messages``, half-close, read to the end: answers, code, details, trailers."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream(method)(metadata=metadata, timeout=10)
        for message in messages:
            await call.write(message)
        await call.done_writing()
        answers: list[bytes] = []
        try:
            async for answer in call:
                answers.append(answer)
        except grpc.aio.AioRpcError:
            pass
        trailers = {k: v for k, v in await call.trailing_metadata() or ()}
        return answers, await call.code(), await call.details() or "", trailers


async def test_both_ads_methods_relay_raw_bytes(ca, root, upstream, agent_factory):
    _, address = upstream
    agent, _ = await agent_factory(address, issue(ca), root)
    junk = [b"\xff\x00 not a protobuf", b"", b"x" * 100_000]  # nothing is decoded
    for method in (SOTW, DELTA):
        answers, code, _, trailers = await exchange(agent.target, method, junk)
        assert (answers, code) == (junk, grpc.StatusCode.OK)
        assert trailers["x-done"] == "ok"


async def test_status_details_and_trailers_come_back(ca, root, upstream, agent_factory):
    _, address = upstream
    agent, _ = await agent_factory(address, issue(ca), root)
    answers, code, details, trailers = await exchange(
        agent.target, SOTW, [b"first", b"abort:PERMISSION_DENIED"])
    assert answers == [b"first"]
    assert (code, details) == (grpc.StatusCode.PERMISSION_DENIED, "upstream says no")
    assert trailers["x-why"] == "because"


async def test_metadata_goes_up_without_credentials(ca, root, upstream, agent_factory):
    _, address = upstream
    agent, _ = await agent_factory(address, issue(ca), root)
    async with grpc.aio.insecure_channel(agent.target) as channel:
        call = channel.stream_stream(SOTW)(
            metadata=(("x-client", "1"), ("authorization", "Bearer google")), timeout=10)
        await call.write(b"meta")
        keys = (await call.read()).decode().split(",")
        assert (await call.initial_metadata())["x-upstream"] == "yes"
        call.cancel()
    assert "x-client" in keys and "authorization" not in keys, keys


async def test_a_downstream_cancel_cancels_upstream(ca, root, upstream, agent_factory):
    recorder, address = upstream
    agent, _ = await agent_factory(address, issue(ca), root)
    async with grpc.aio.insecure_channel(agent.target) as channel:
        call = channel.stream_stream(SOTW)()
        await call.write(b"hang")
        await asyncio.wait_for(recorder.hanging.wait(), 5)
        call.cancel()
        await asyncio.wait_for(recorder.cancelled.wait(), 5)
    for _ in range(100):  # the relay's bookkeeping follows on the agent's side
        if agent.forwarder.streams == 0:
            break
        await asyncio.sleep(0.02)
    assert agent.forwarder.streams == 0


async def test_after_a_rotation_new_streams_use_the_new_certificate(
        ca, root, upstream, agent_factory, tmp_path):
    recorder, address = upstream
    first, second = issue(ca), issue(ca)
    out = tmp_path / "out"
    agent, certificates = await agent_factory(address, first, root, out_dir=out)
    assert (out / CERT_FILE).read_bytes() == first.chain_pem
    async with grpc.aio.insecure_channel(agent.target) as channel:
        old = channel.stream_stream(SOTW)()
        await old.write(b"one")
        assert await old.read() == b"one"

        certificates.install(second)
        await asyncio.sleep(0)
        assert agent.channels.serials == [first.serial, second.serial]
        assert (await exchange(agent.target, DELTA, [b"new"]))[:2] == ([b"new"],
                                                                      grpc.StatusCode.OK)
        await old.write(b"still")  # the stream in flight keeps its connection
        assert await old.read() == b"still"
        await old.done_writing()
        assert await old.code() == grpc.StatusCode.OK
    assert recorder.serials == [first.serial, second.serial]
    for _ in range(100):
        if agent.channels.serials == [second.serial]:
            break
        await asyncio.sleep(0.02)
    assert agent.channels.serials == [second.serial]  # the old channel, closed once unused
    assert (out / KEY_FILE).read_bytes() == second.key_pem
    assert (out / CA_FILE).read_bytes() == second.roots_pem
    assert stat.S_IMODE((out / KEY_FILE).stat().st_mode) == 0o600


async def test_a_control_plane_the_pinned_root_does_not_vouch_for(ca, root, agent_factory):
    impostor_ca = CertificateAuthority.create()
    server, address = await start_upstream(impostor_ca, Upstream())
    try:
        agent, _ = await agent_factory(address, issue(ca), root)
        answers, code, details, _ = await exchange(agent.target, SOTW, [b"secret"])
    finally:
        await server.stop(0)
    assert (answers, code) == ([], grpc.StatusCode.UNAVAILABLE)
    assert "failed TLS verification against the pinned root" in details, details


async def test_a_certificate_the_control_plane_refuses(ca, root, upstream, agent_factory):
    _, address = upstream
    stranger = issue(CertificateAuthority.create())  # not of this mesh
    agent, _ = await agent_factory(address, stranger, root)
    _, code, details, _ = await exchange(agent.target, SOTW, [b"hello"])
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "refused this workload's certificate" in details, details


async def test_an_unreachable_control_plane(ca, root, agent_factory):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"  # nobody listens
    agent, _ = await agent_factory(address, issue(ca), root)
    _, code, details, _ = await exchange(agent.target, SOTW, [b"hello"])
    assert code == grpc.StatusCode.UNAVAILABLE
    assert f"the control plane at {address} is unreachable" in details, details


async def test_a_control_plane_that_goes_away_mid_stream(ca, root, agent_factory):
    """An established stream that breaks is not blamed on certificates: the status
    comes back as the upstream gave it, and the client reconnects."""
    server, address = await start_upstream(ca, Upstream())
    agent, _ = await agent_factory(address, issue(ca), root)
    async with grpc.aio.insecure_channel(agent.target) as channel:
        call = channel.stream_stream(SOTW)()
        await call.write(b"one")
        assert await call.read() == b"one"
        await server.stop(0)
        assert await call.code() == grpc.StatusCode.UNAVAILABLE
        assert "meshctl agent" not in (await call.details() or "")


async def test_only_the_ads_methods_are_served(ca, root, upstream, agent_factory):
    _, address = upstream
    agent, _ = await agent_factory(address, issue(ca), root)
    async with grpc.aio.insecure_channel(agent.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(
                "/istio.v1.auth.IstioCertificateService/CreateCertificate")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_unix_socket_only_its_owner_can_use(ca, root, upstream, agent_factory,
                                                    tmp_path):
    _, address = upstream
    path = tmp_path / "run" / "agent" / "xds.sock"
    agent, _ = await agent_factory(address, issue(ca), root,
                                   listen=parse_listen(f"unix:{path}"))
    assert agent.target == f"unix://{path}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert (await exchange(agent.target, SOTW, [b"hi"]))[:2] == ([b"hi"],
                                                                 grpc.StatusCode.OK)
    # A second agent on the same path would take the socket over (gRPC unlinks it):
    # refused while the first one serves.
    with pytest.raises(BindError, match="already in use") as err:
        await agent_factory(address, issue(ca), root, listen=parse_listen(f"unix:{path}"))
    assert err.value.errno == errno.EADDRINUSE
    await agent.stop(grace=0)
    assert not path.exists()


async def test_a_stale_socket_is_replaced_and_a_file_is_not(ca, root, upstream,
                                                            agent_factory, tmp_path):
    _, address = upstream
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(stale))  # bound, never listening: what a killed agent leaves
    agent, _ = await agent_factory(address, issue(ca), root,
                                   listen=parse_listen(f"unix:{stale}"))
    assert (await exchange(agent.target, SOTW, [b"hi"]))[1] == grpc.StatusCode.OK
    plain = tmp_path / "file"
    plain.write_text("not a socket")
    with pytest.raises(BindError, match="not a socket"):
        await agent_factory(address, issue(ca), root, listen=parse_listen(f"unix:{plain}"))
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(BindError, match="writable by other users"):
        await agent_factory(address, issue(ca), root,
                            listen=parse_listen(f"unix:{shared}/xds.sock"))


async def test_a_busy_port_is_a_bind_error(ca, root, upstream, agent_factory, held_port):
    _, address = upstream
    with pytest.raises(BindError, match=f"127.0.0.1:{held_port}: address already in use"):
        await agent_factory(address, issue(ca), root,
                            listen=parse_listen(f"127.0.0.1:{held_port}"))


def test_listen_forms():
    assert parse_listen(":15011").target() == "127.0.0.1:15011"
    assert parse_listen("[::1]:0").target(4242) == "[::1]:4242"
    assert parse_listen("localhost:1").host == "localhost"
    assert parse_listen("unix:///run/x.sock").target() == "unix:///run/x.sock"
    assert parse_listen("unix:/run/x.sock").path == Path("/run/x.sock")
    assert parse_listen("unix:rel.sock").path == Path(os.getcwd()) / "rel.sock"
    for bad in ("0.0.0.0:15011", "10.1.2.3:15011", "[::]:1", "example.com:1"):
        with pytest.raises(ValueError, match="not a loopback address"):
            parse_listen(bad)
    assert parse_listen("0.0.0.0:1", allow_non_loopback=True).host == "0.0.0.0"
    for bad in ("15011", "unix:", "unix://host/x", "host:port"):
        with pytest.raises(ValueError, match="expected"):
            parse_listen(bad)


async def test_a_refusing_ca_is_fatal_and_an_absent_one_is_retried(ca, root, caplog):
    impostor_ca = CertificateAuthority.create()
    server, address = await start_upstream(impostor_ca, Upstream())
    try:
        with pytest.raises(CertificateError, match="failed TLS verification"):
            await first_certificate(IssuedCertificates(address, IDENTITY, token="t",
                                                       ca_root=root))
    finally:
        await server.stop(0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{sock.getsockname()[1]}"
    await first_certificate(IssuedCertificates(nowhere, IDENTITY, token="t", ca_root=root))
    assert "no certificate yet, retrying" in caplog.text


# ------------------------------------------------------------------ the command line


def run(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().err


def test_agent_help_is_plain_text(capsys):
    assert run(capsys, "agent", "--help")[0] == 0
    text = capsys.readouterr().out
    assert "`" not in text


@pytest.mark.parametrize(("args", "says"), [
    (["--listen", "0.0.0.0:15011", "--ca-root", "r.pem"], "not a loopback address"),
    (["--service-account", "web"], "--ca-root FILE is needed"),
    (["--ca-root", "r.pem"], "no identity"),
    (["--ca-root", "r.pem", "--service-account", "web", "--token", "secret"],
     "never on the command line"),
    (["--insecure-upstream", "--out-dir", "d"], "--out-dir needs an identity"),
    (["--ca-root", "r.pem", "--service-account", "web", "--cert-dir", "d"], "not allowed"),
])
def test_agent_usage_errors(capsys, monkeypatch, args, says):
    monkeypatch.delenv("MESHLIB_TOKEN", raising=False)
    code, err = run(capsys, "agent", "--xds-address", "127.0.0.1:15010", *args)
    assert code == 2 and says in err, err


def test_agent_on_a_busy_port_says_so_before_asking_the_ca(capsys, held_port, tmp_path):
    (tmp_path / "token").write_text("t")
    code, err = run(capsys, "agent", "--xds-address", "127.0.0.1:1", "--ca-root",
                    str(tmp_path / "missing.pem"), "--service-account", "web",
                    "--token-file", str(tmp_path / "token"),
                    "--listen", f"127.0.0.1:{held_port}")
    assert code == 1
    assert f"cannot serve the xDS agent on 127.0.0.1:{held_port}: address already in use" \
        in err, err


def test_bootstrap_points_at_an_agent_on_a_unix_socket(capsys):
    for given in ("unix:/run/meshlib/xds.sock", "unix:///run/meshlib/xds.sock"):
        code = main(["bootstrap", "--xds-address", given, "--node-id", "n"])
        out = capsys.readouterr().out
        assert code == 0
        assert json.loads(out)["xds_servers"][0]["server_uri"] == \
            "unix:///run/meshlib/xds.sock"
    code, err = run(capsys, "bootstrap", "--xds-address", "unix://host/x", "--node-id", "n")
    assert code == 2 and "expected unix:/PATH" in err
