"""``mesh.server()``: a gRPC server that takes the mesh's mTLS and authorization.

The server's Listener (gRFC A36's name for its address) comes from the control
plane and says two things:

* the **mTLS mode** — ``STRICT``: TLS with a required client certificate from the
  mesh CA, checked in gRPC's handshake; ``DISABLE``: plaintext; ``PERMISSIVE``: both
  on one port. gRPC cannot sniff TLS from plaintext itself, so for PERMISSIVE the
  public port is a small in-process front that peeks at the first byte of each
  connection and splices it to an internal TLS or plaintext port (the one mode
  with an extra hop: it is meant for migrations). The mode is read when the server
  starts; a later change is logged and applies at the next start.
* the **authorization policy** (RBAC), swapped live into the server interceptor.

The server certificate rotates without a restart: gRPC asks the credentials for the
current certificate on each new handshake (``grpc.dynamic_ssl_server_credentials``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc

from meshlib.contract import server_listener_name
from meshlib.errors import MeshError
from meshlib.resilience import RateLimit
from meshlib.security._certificates import CertificateSource, WorkloadCertificate
from meshlib.security._peer import peer_principal
from meshlib.telemetry._metrics import counting_codec
from meshlib.telemetry._server import server_wrappers
from meshlib.xds._listener import DEFAULT_SAMPLING, ServerListenerUpdate

if TYPE_CHECKING:
    from meshlib.security._authz import AuthorizationPolicy
    from meshlib.telemetry import MeshMetrics

__all__ = ["MTLS_MODES", "MeshServer", "ServerPolicy", "build_server", "server_credentials",
           "server_listener_name"]

log = logging.getLogger("meshlib")

MTLS_MODES = ("STRICT", "PERMISSIVE", "DISABLE")
_TLS_HANDSHAKE = 0x16  # the first byte of a TLS ClientHello record
_MAX_BUCKETS = 10_000  # distinct callers tracked before the buckets start over


class ServerPolicy:
    """What the control plane says about one server address (set on the xDS thread)."""

    def __init__(self, name: str = "") -> None:
        from interceptors.authz import authorization_check

        self.name = name  # the server Listener followed
        self._authorize = authorization_check(self.current_authorization)
        self.mode: str | None = None
        self.authorization: AuthorizationPolicy | None = None
        self.rate_limit: tuple[float, int] | None = None
        self.sampling = DEFAULT_SAMPLING  # MeshConfig tracing share, for root calls
        self.access_log = False  # MeshConfig access logs
        self._buckets: dict[str | None, RateLimit] = {}  # per caller identity
        self.ready = threading.Event()

    def update(self, listener: object) -> None:
        if not isinstance(listener, ServerListenerUpdate):
            return
        if listener.rate_limit != self.rate_limit:
            self.rate_limit = listener.rate_limit
            self._buckets = {}
        if self.mode is not None and listener.mtls_mode != self.mode:
            log.warning("mTLS mode of %s changed from %s to %s: restart the server to "
                        "apply it", listener.name, self.mode, listener.mtls_mode)
        else:
            self.mode = listener.mtls_mode
        self.authorization = listener.authorization
        self.sampling = listener.tracing_sampling
        self.access_log = listener.access_log
        self.ready.set()

    def removed(self) -> None:
        self.ready.set()  # no Listener for this address: the caller picks a default

    def observability(self) -> tuple[float, bool]:
        """(tracing sampling share, access logs on), as the control plane says now."""
        return self.sampling, self.access_log

    def current_authorization(self) -> AuthorizationPolicy | None:
        return self.authorization

    def check(self, method: str, context: Any) -> tuple[grpc.StatusCode, str] | None:
        """Authorization, then the local rate limit (one token bucket per caller
        identity; plaintext callers share one). Over the limit: RESOURCE_EXHAUSTED
        with a ``grpc-retry-pushback-ms`` trailer (gRFC A6) saying when to retry."""
        if self.authorization is not None:
            refusal = self._authorize(method, context)
            if refusal is not None:
                return refusal
        if self.rate_limit is None:
            return None
        wait = self.throttle(peer_principal(context))
        if not wait:
            return None
        millis = max(1, round(wait * 1000))
        context.set_trailing_metadata((("grpc-retry-pushback-ms", str(millis)),))
        return (grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limited: retry in {millis} ms")

    def throttle(self, principal: str | None) -> float:
        """Take a token of ``principal``'s bucket: 0.0 to go on, else the seconds
        until one is due (no rate limit: always 0.0)."""
        limit = self.rate_limit
        if limit is None:
            return 0.0
        bucket = self._buckets.get(principal)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._buckets = {}
            bucket = self._buckets[principal] = RateLimit(limit[0], limit[1])
        return bucket.try_acquire()


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
                 max_workers: int, loop: asyncio.AbstractEventLoop
                 ) -> tuple[Any, _Front | None]:
    """A gRPC server (sync or aio) bound to ``host:port`` for ``mode``; for PERMISSIVE
    also the front that owns the public port (running on ``loop``)."""
    if mode not in MTLS_MODES:
        raise MeshError(f"unknown mTLS mode {mode!r}: use one of {', '.join(MTLS_MODES)}")
    if mode != "DISABLE" and source is None:
        raise MeshError(f"this server's mTLS mode is {mode} but the Mesh has no identity: "
                        "give Mesh a token, token_file or cert_dir (or set "
                        "MESHLIB_TOKEN_FILE / MESHLIB_CERT_DIR)")
    if aio:
        server = grpc.aio.server(interceptors=list(interceptors), options=list(options))
    else:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                             interceptors=list(interceptors), options=list(options))
    address = f"{host}:{port}"
    if mode == "DISABLE":
        _bind(server.add_insecure_port(address), address)
        return server, None
    credentials = server_credentials(source)  # type: ignore[arg-type]
    if mode == "STRICT":
        _bind(server.add_secure_port(address, credentials), address)
        return server, None
    tls_port = _bind(server.add_secure_port("127.0.0.1:0", credentials), "127.0.0.1:0")
    plain_port = _bind(server.add_insecure_port("127.0.0.1:0"), "127.0.0.1:0")
    front = _Front(host, port, tls_port=tls_port, plain_port=plain_port, loop=loop)
    return server, front


def _bind(port: int, address: str) -> int:
    if not port:
        raise MeshError(f"cannot bind a gRPC server to {address}")
    return port


class _Front:
    """PERMISSIVE's one public port: peek at each connection's first byte and splice
    it to the internal TLS port (a TLS ClientHello) or the plaintext one."""

    def __init__(self, host: str, port: int, *, tls_port: int, plain_port: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.host, self.port = host.strip("[]") or "::", port
        self._ports = (tls_port, plain_port)
        self._loop = loop
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  reuse_address=True)

    def stop(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=5)

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            first = await reader.read(1)
            if not first:
                return
            port = self._ports[0] if first[0] == _TLS_HANDSHAKE else self._ports[1]
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            sock = up_writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up_writer.write(first)
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError):
            writer.close()


def _no_observability() -> tuple[float, bool]:
    return DEFAULT_SAMPLING, False


def count_bytes(handler: Any, on_request: Callable[[float], None],
                on_response: Callable[[float], None]) -> Any:
    """``handler`` with its (de)serializers counting the bytes they see."""
    if not hasattr(handler, "_replace"):
        return handler
    serialize, deserialize = counting_codec(handler.response_serializer,
                                            handler.request_deserializer,
                                            on_response, on_request)
    return handler._replace(request_deserializer=deserialize, response_serializer=serialize)


class MeshServer:
    """A ``grpc.Server`` (or ``grpc.aio.Server``) plus what the mesh runs beside it.

    Everything a gRPC server does is delegated; handlers added are guarded by the
    authorization policy (at registration, not with a per-call interceptor);
    ``start``/``stop`` also run the PERMISSIVE front and stop following the control
    plane. ``port`` is the public
    port; ``mtls_mode`` the mode it serves.
    """

    def __init__(self, server: Any, front: _Front | None, *, port: int, mtls_mode: str,
                 on_stop: Callable[[], None],
                 policy: Callable[[str, Any], tuple[grpc.StatusCode, str] | None],
                 service: str = "", metrics: MeshMetrics | None = None,
                 observe: Callable[[], tuple[float, bool]] | None = None) -> None:
        self._server = server
        self._observe = observe or _no_observability
        self._service = service
        self._metrics = metrics
        self._policy = policy
        self._front = front
        self.port = port
        self.mtls_mode = mtls_mode
        self._on_stop = on_stop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)

    def _wrap(self, handler: Any, method: str) -> Any:
        from interceptors._handlers import rewrap_handler
        from interceptors.authz import guard_handler

        guarded = guard_handler(handler, self._policy, method)
        if self._metrics is None or guarded is None:
            return guarded
        wrapped = rewrap_handler(guarded, **server_wrappers(self._metrics, self._service,
                                                             method, self._observe))
        return count_bytes(wrapped, *self._metrics.byte_counters("server", self._service,
                                                                 method))

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[Any]) -> None:
        """Add handlers, each guarded by the mesh's authorization and rate limit and
        timed for its metrics — once, here, not by a per-call interceptor."""
        from interceptors._handlers import rewrap_generic

        self._server.add_generic_rpc_handlers(tuple(
            rewrap_generic(h, self._wrap) for h in generic_rpc_handlers))

    def add_registered_method_handlers(self, service_name: str,
                                       method_handlers: dict[str, Any]) -> None:
        """Generated code's registration (grpcio ≥ 1.63), guarded the same way."""
        self._server.add_registered_method_handlers(service_name, {
            name: self._wrap(h, f"/{service_name}/{name}")
            for name, h in method_handlers.items()})

    def start(self) -> Any:
        result = self._server.start()
        if self._front is not None:
            self._front.start()
        return result

    def stop(self, grace: float | None) -> Any:
        if self._front is not None:
            self._front.stop()
        self._on_stop()
        return self._server.stop(grace)
