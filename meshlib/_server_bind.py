"""Binding a gRPC server for an mTLS mode: STRICT, PERMISSIVE or DISABLE.

* ``STRICT``: TLS with a required client certificate from the mesh CA, checked in
  gRPC's handshake;
* ``DISABLE``: plaintext;
* ``PERMISSIVE``: both on one port. gRPC cannot sniff TLS from plaintext itself, so
  the public port is a small in-process front (:class:`Front`) that peeks at the first
  byte of each connection and splices it to an internal TLS or plaintext port (the
  one mode with an extra hop: it is meant for migrations).

The front is bounded (:class:`FrontLimits`): a connection that sends nothing within
:data:`DEFAULT_FIRST_BYTE_TIMEOUT` is closed; over :data:`DEFAULT_MAX_CONNECTIONS`
open connections, or :data:`DEFAULT_MAX_PENDING` still silent ones, new connections
are closed at once (counted in :attr:`Front.refused`, a WARNING at most every 10 s).
gRPC sees each forwarded connection come from the front's loopback hop; the front
records the real caller under that hop's address (:data:`meshlib.security.FORWARDED`)
so :func:`meshlib.peer_address`, denial logs, access logs and the per-caller rate
limit see the caller, not ``127.0.0.1``.

Ports are never shared: the servers refuse ``SO_REUSEPORT``
(:data:`~meshlib.contract.NO_REUSEPORT`) and a busy address raises
:class:`~meshlib.contract.BindError` naming it.

The server certificate rotates without a restart: gRPC asks the credentials for the
current certificate on each new handshake (``grpc.dynamic_ssl_server_credentials``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from meshlib.contract import MTLS_MODES, NO_REUSEPORT, BindError, check_free
from meshlib.contract.listen import address_of
from meshlib.errors import MeshError
from meshlib.security import FORWARDED, CertificateSource, WorkloadCertificate

__all__ = ["DEFAULT_FIRST_BYTE_TIMEOUT", "DEFAULT_MAX_CONNECTIONS", "DEFAULT_MAX_PENDING",
           "MTLS_MODES", "Front", "FrontLimits", "build_server", "server_credentials"]

log = logging.getLogger("meshlib")

_TLS_HANDSHAKE = 0x16  # the first byte of a TLS ClientHello record
_WARN_EVERY = 10.0  # seconds between two warnings about refused connections

#: Seconds a new connection may take to send its first byte (a gRPC client sends its
#: ClientHello or HTTP/2 preface at once); then it is closed.
DEFAULT_FIRST_BYTE_TIMEOUT = 10.0
#: Connections open through the front at once (each holds three sockets: the
#: caller's, the loopback hop and gRPC's end of it); lowered to a third of the
#: process's open-file limit when that is smaller.
DEFAULT_MAX_CONNECTIONS = 10_000
#: Connections that have not sent their first byte yet, at once.
DEFAULT_MAX_PENDING = 1_000


@dataclass(frozen=True, kw_only=True)
class FrontLimits:
    """What one PERMISSIVE front admits: ``first_byte_timeout`` seconds for a
    connection's first byte, ``max_connections`` open at once (None: the default,
    bounded by the open-file limit) and ``max_pending`` of them still silent."""

    first_byte_timeout: float = DEFAULT_FIRST_BYTE_TIMEOUT
    max_connections: int | None = None
    max_pending: int = DEFAULT_MAX_PENDING

    def connection_cap(self) -> int:
        """``max_connections``, or the default one this process has file handles for."""
        if self.max_connections is not None:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return DEFAULT_MAX_CONNECTIONS
        return max(1, min(DEFAULT_MAX_CONNECTIONS, soft // 3))


def server_credentials(source: CertificateSource) -> grpc.ServerCredentials:
    """mTLS server credentials that follow ``source``: each new handshake uses the
    newest certificate, and requires a client certificate from the mesh roots."""
    first = source.current
    if first is None:
        raise MeshError("no workload certificate yet: cannot serve mTLS")
    served = [first]

    def config(cert: WorkloadCertificate) -> Any:
        return grpc.ssl_server_certificate_configuration(
            [(cert.key_pem, cert.chain_pem)], root_certificates=cert.roots_pem)

    def fetch() -> Any:
        current = source.current
        if current is None or current is served[0]:
            return None  # keep what gRPC has
        served[0] = current
        return config(current)

    return grpc.dynamic_ssl_server_credentials(config(first), fetch,
                                               require_client_authentication=True)


def build_server(*, mode: str, source: CertificateSource | None, host: str, port: int,
                 interceptors: Sequence[Any], aio: bool, options: Sequence[tuple[str, Any]],
                 max_workers: int, loop: asyncio.AbstractEventLoop, service: str = "gRPC",
                 front_limits: FrontLimits | None = None) -> tuple[Any, Front | None]:
    """A gRPC server (sync or aio) bound to ``host:port`` for ``mode``; for PERMISSIVE
    also the front that owns the public port (running on ``loop``). A busy
    ``host:port`` raises :class:`BindError` ("cannot serve ``service`` on ...")."""
    if mode not in MTLS_MODES:
        raise MeshError(f"unknown mTLS mode {mode!r}: use one of {', '.join(MTLS_MODES)}")
    if mode != "DISABLE" and source is None:
        raise MeshError(f"this server's mTLS mode is {mode} but the Mesh has no identity: "
                        "give Mesh a token, token_file or cert_dir (or set "
                        "MESHLIB_TOKEN_FILE / MESHLIB_CERT_DIR)")
    what = f"serve {service}"
    check_free(host, port, what=what)
    options = [NO_REUSEPORT, *options]
    if aio:
        server = grpc.aio.server(interceptors=list(interceptors), options=options)
    else:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                             interceptors=list(interceptors), options=options)
    address = address_of(host, port)
    if mode == "DISABLE":
        _bind(lambda: server.add_insecure_port(address), address, what)
        return server, None
    credentials = server_credentials(source)  # type: ignore[arg-type]
    if mode == "STRICT":
        _bind(lambda: server.add_secure_port(address, credentials), address, what)
        return server, None
    inner = "127.0.0.1:0"
    tls_port = _bind(lambda: server.add_secure_port(inner, credentials), inner, what)
    plain_port = _bind(lambda: server.add_insecure_port(inner), inner, what)
    front = Front(host, port, tls_port=tls_port, plain_port=plain_port, loop=loop, what=what,
                  limits=front_limits)
    return server, front


def _bind(add_port: Callable[[], int], address: str, what: str) -> int:
    try:
        port = add_port()
    except RuntimeError:  # grpcio >= 1.5x raises where it used to return 0
        port = 0
    if not port:
        raise BindError(address, "in use or not an address of this host", what=what)
    return port


class Front:
    """PERMISSIVE's one public port: peek at each connection's first byte and splice
    it to the internal TLS port (a TLS ClientHello) or the plaintext one, within
    ``limits`` (:class:`FrontLimits`). Each forwarded connection's real caller is in
    :data:`~meshlib.security.FORWARDED` while it is open; :attr:`refused` counts the
    connections closed unserved, by reason (``max_connections``, ``max_pending``,
    ``first_byte_timeout``)."""

    def __init__(self, host: str, port: int, *, tls_port: int, plain_port: int,
                 loop: asyncio.AbstractEventLoop, what: str = "serve",
                 limits: FrontLimits | None = None) -> None:
        self.host, self.port = host.strip("[]") or "::", port
        self._what = what
        self._ports = (tls_port, plain_port)
        self._loop = loop
        self.limits = limits or FrontLimits()
        self._cap = self.limits.connection_cap()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = 0  # connections held (all on the loop: no lock)
        self._pending = 0  # of which not yet past their first byte
        self.refused: Counter[str] = Counter()
        self._unreported = 0
        self._warn_after = 0.0

    def start(self) -> None:
        """Listen on the public port (never shared: no ``SO_REUSEPORT``); a busy one
        raises :class:`BindError`."""
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        except OSError as err:
            raise BindError.from_os_error(address_of(self.host, self.port), err,
                                          what=self._what) from None

    async def _start(self) -> None:
        # "::" means every address, as for gRPC: asyncio makes IPv6 sockets V6ONLY, so
        # listen on each family's wildcard (None) or IPv4 callers are refused.
        self._server = await asyncio.start_server(
            self._accept, None if self.host == "::" else self.host, self.port,
            reuse_address=True)

    @property
    def bound_port(self) -> int:
        """The port listened on (``port``, or the one picked for port 0)."""
        if self._server is None or not self._server.sockets:
            return self.port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        """Connections open through the front now."""
        return self._open

    @property
    def pending(self) -> int:
        """Of those, the ones that have not sent their first byte yet."""
        return self._pending

    def stop(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=5)

    def _refuse(self, reason: str) -> None:
        self.refused[reason] += 1
        self._unreported += 1
        now = time.monotonic()
        if now >= self._warn_after:
            self._warn_after = now + _WARN_EVERY
            log.warning("PERMISSIVE front of %s:%d closed %d connection(s) unserved "
                        "(now: %s; limits: %d open, %d silent, first byte within %g s)",
                        self.host, self.port, self._unreported, reason, self._cap,
                        self.limits.max_pending, self.limits.first_byte_timeout)
            self._unreported = 0

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        if self._open >= self._cap or self._pending >= self.limits.max_pending:
            self._refuse("max_connections" if self._open >= self._cap else "max_pending")
            writer.transport.abort()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._open += 1
        self._pending += 1
        hop = ""
        try:
            try:
                first = await asyncio.wait_for(reader.read(1),
                                               self.limits.first_byte_timeout)
            except TimeoutError:
                self._refuse("first_byte_timeout")
                return
            finally:
                self._pending -= 1
            if not first:
                return
            port = self._ports[0] if first[0] == _TLS_HANDSHAKE else self._ports[1]
            up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                up.setblocking(False)
                # An explicit bind gives the hop a source port no other socket on this
                # host holds while it is open: its address names this connection alone.
                up.bind(("127.0.0.1", 0))
                hop = f"ipv4:127.0.0.1:{up.getsockname()[1]}"
                FORWARDED[hop] = _grpc_peer(writer.get_extra_info("peername"))
                up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await self._loop.sock_connect(up, ("127.0.0.1", port))
            except BaseException:
                up.close()
                raise
            up_reader, up_writer = await asyncio.open_connection(sock=up)
            up_writer.write(first)
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            if hop:
                FORWARDED.pop(hop, None)
            self._open -= 1
            writer.close()
            if task is not None:
                self._tasks.discard(task)


def _grpc_peer(address: Any) -> str:
    """A socket address as gRPC writes a peer: ``ipv4:10.0.3.7:41234``,
    ``ipv6:%5B2001:db8::7%5D:41234`` (an IPv4-mapped IPv6 address as IPv4)."""
    if not isinstance(address, tuple) or len(address) < 2:
        return "unknown"
    host, port = address[0], address[1]
    if ":" not in host:
        return f"ipv4:{host}:{port}"
    if host.startswith("::ffff:") and "." in host:
        return f"ipv4:{host[7:]}:{port}"
    return f"ipv6:%5B{host}%5D:{port}"


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError):
            writer.close()
