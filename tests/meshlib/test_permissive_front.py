"""The PERMISSIVE front's limits, with real sockets: a connection that sends nothing
is closed after the first-byte timeout; over the connection caps new connections are
closed at once; and the caller's real address — not the front's loopback hop — is
what handlers (:func:`meshlib.peer_address`), access logs and the per-caller rate
limit see, for plaintext and TLS connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

import meshlib
from meshlib._server_bind import DEFAULT_FIRST_BYTE_TIMEOUT, Front, FrontLimits
from meshlib.security import FORWARDED
from meshlib.telemetry import access_logger

WHO = "/demo.Who/Am"


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closes ``sock`` (EOF or reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture
def upstream() -> Iterator[int]:
    """A listening socket standing in for gRPC's internal ports (holds connections)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


@pytest.fixture
def make_front(loop, upstream) -> Iterator[Callable[..., Front]]:
    fronts: list[Front] = []

    def make(**limits: float) -> Front:
        front = Front("127.0.0.1", 0, tls_port=upstream, plain_port=upstream, loop=loop,
                      limits=FrontLimits(**limits))  # type: ignore[arg-type]
        front.start()
        fronts.append(front)
        return front

    yield make
    for front in fronts:
        front.stop()


def connect(front: Front, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", front.bound_port), timeout=5,
                                    source_address=(source, 0))


def test_the_default_limits():
    limits = FrontLimits()
    assert limits.first_byte_timeout == DEFAULT_FIRST_BYTE_TIMEOUT == 10.0
    assert 1 <= limits.connection_cap() <= 10_000
    assert limits.max_pending == 1_000


def test_a_connection_that_sends_nothing_is_closed_after_the_timeout(make_front, caplog):
    front = make_front(first_byte_timeout=0.3)
    with connect(front) as silent, connect(front) as talker:
        talker.sendall(b"\x00")  # past its first byte: the timeout is over for it
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="meshlib"):
            assert closed_within(silent, 5)
        assert 0.25 <= time.monotonic() - started < 3
        assert not closed_within(talker, 0.5)
    assert front.refused["first_byte_timeout"] == 1
    assert "closed 1 connection(s) unserved (now: first_byte_timeout" in caplog.text
    wait_for(lambda: front.connections == 0)


def test_over_the_connection_cap_new_connections_are_closed_at_once(make_front, caplog):
    front = make_front(max_connections=2)
    first, second = connect(front), connect(front)
    first.sendall(b"\x00")
    wait_for(lambda: front.connections == 2)
    with caplog.at_level(logging.WARNING, logger="meshlib"):
        for _ in range(3):
            with connect(front) as over:
                assert closed_within(over, 1)
    assert front.refused["max_connections"] == 3
    assert caplog.text.count("unserved") == 1  # rate-limited: one warning
    assert not closed_within(second, 0.2)  # those held stay served
    first.close()
    wait_for(lambda: front.connections == 1)
    with connect(front) as again:
        assert not closed_within(again, 0.3)  # room again
    second.close()


def test_silent_connections_have_a_lower_cap(make_front):
    front = make_front(max_pending=1)
    with connect(front) as silent:
        wait_for(lambda: front.pending == 1)
        with connect(front) as over:
            assert closed_within(over, 1)
        assert front.refused["max_pending"] == 1
        silent.sendall(b"\x00")  # no longer silent: room for another
        wait_for(lambda: front.pending == 0)
        with connect(front) as next_one:
            assert not closed_within(next_one, 0.3)


@pytest.mark.parametrize("first_byte", [b"\x16", b"P"], ids=["tls", "plaintext"])
def test_the_front_records_the_real_caller_of_each_hop(make_front, upstream, first_byte):
    front = make_front()
    with connect(front, source="127.0.0.2") as caller:
        caller.sendall(first_byte)
        real = f"ipv4:127.0.0.2:{caller.getsockname()[1]}"
        wait_for(lambda: real in FORWARDED.values())
        hop = next(k for k, v in FORWARDED.items() if v == real)
        assert hop.startswith("ipv4:127.0.0.1:") and hop != real
    wait_for(lambda: hop not in FORWARDED)  # forgotten once the connection ends


def test_a_front_on_every_address_takes_ipv4_and_ipv6_callers(loop, upstream):
    """``[::]`` (mesh.server's default host) is every address, IPv4 included."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # a free port to give the front explicitly
    front = Front("[::]", port, tls_port=upstream, plain_port=upstream, loop=loop)
    front.start()
    try:
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family) as caller:
                caller.settimeout(5)
                caller.connect((address, port))
                caller.sendall(b"P")
                name = caller.getsockname()
                real = (f"ipv4:{name[0]}:{name[1]}" if family == socket.AF_INET
                        else f"ipv6:%5B{name[0]}%5D:{name[1]}")
                wait_for(lambda: real in FORWARDED.values())  # noqa: B023
    finally:
        front.stop()


# --------------------------------------------------------- through a real mesh.server


class Relay:
    """A TCP relay on 127.0.0.1 that reaches ``port`` from another loopback address:
    gRPC clients cannot pick their source address, so they connect through this."""

    def __init__(self, port: int, source: str) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._to, self._source = port, source
        self.callers: list[str] = []  # the addresses the front sees, gRPC-style
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._listener.accept()
                up = socket.create_connection(("127.0.0.1", self._to),
                                              source_address=(self._source, 0))
                self.callers.append(f"ipv4:{self._source}:{up.getsockname()[1]}")
                self._sockets += [conn, up]
                for a, b in ((conn, up), (up, conn)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def permissive(mesh_control_plane) -> Iterator[meshlib.MeshServer]:
    """A PERMISSIVE ``mesh.server()`` whose handler answers the caller's address."""
    mesh = mesh_control_plane.mesh("reviews", identity=True)

    def who(request: bytes, context: grpc.ServicerContext) -> bytes:
        identity = meshlib.peer_identity(context)
        return json.dumps({"address": meshlib.peer_address(context), "peer": context.peer(),
                           "identity": str(identity) if identity else None}).encode()

    server = mesh.server("reviews", 0, host="127.0.0.1", mtls="PERMISSIVE")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("demo.Who", {
        "Am": grpc.unary_unary_rpc_method_handler(who)}),))
    server.start()
    yield server
    server.stop(None)


@pytest.fixture
def relays(permissive) -> Iterator[Callable[[str], Relay]]:
    made: list[Relay] = []

    def relay(source: str) -> Relay:
        made.append(Relay(permissive.port, source))
        return made[-1]

    yield relay
    for relay_ in made:
        relay_.close()


def ask(port: int) -> grpc.UnaryUnaryMultiCallable:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel.unary_unary(WHO)


def test_a_handler_sees_the_real_caller_behind_the_front(permissive, relays):
    relay = relays("127.0.0.2")
    answer = json.loads(ask(relay.port)(b"", timeout=5))
    assert relay.callers and answer["address"] == relay.callers[0]
    assert answer["peer"].startswith("ipv4:127.0.0.1:")  # what gRPC itself sees


def test_the_access_log_names_the_real_caller(permissive, relays, capsys):
    permissive._policy.access_log = True  # what MeshConfig accessLogs would set
    access_logger()
    relay = relays("127.0.0.3")
    ask(relay.port)(b"", timeout=5)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{")]
    served = [line for line in lines if line["kind"] == "server"]
    assert served and served[-1]["source_address"] == relay.callers[0]


def test_callers_without_identity_get_a_rate_limit_bucket_per_address(permissive, relays):
    permissive._policy.admission.configure(None, (0.01, 1))  # one call, then 100 s
    first, second = ask(relays("127.0.0.2").port), ask(relays("127.0.0.3").port)
    first(b"", timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        first(b"", timeout=5)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    second(b"", timeout=5)  # another address: a bucket of its own


def test_an_mtls_caller_behind_the_front_is_seen_with_its_address(
        permissive, relays, mesh_control_plane, mesh_ca):
    cert = mesh_control_plane.mesh("frontend", identity=True).certificates.wait(5)
    credentials = grpc.ssl_channel_credentials(cert.roots_pem, cert.key_pem, cert.chain_pem)
    relay = relays("127.0.0.4")
    with grpc.secure_channel(f"127.0.0.1:{relay.port}", credentials, options=[
            ("grpc.ssl_target_name_override", mesh_ca.identity("reviews").dns_name)]
            ) as channel:
        answer = json.loads(channel.unary_unary(WHO)(b"", timeout=5))
    assert answer["identity"] == str(mesh_ca.identity("frontend"))
    assert answer["address"] == relay.callers[0]
