"""``mesh.server()``: a gRPC server that takes the mesh's mTLS and authorization.

The server's Listener (gRFC A36's name for its address) comes from the control
plane (:class:`ServerPolicy` follows it) and says:

* the **mTLS mode** (:mod:`meshlib._server_bind`) — read when the server starts; a
  later change is logged and applies at the next start;
* **admission** — the authorization policy (RBAC) and the local rate limit,
  swapped live into the :class:`~meshlib.security.Admission` every handler's guard
  asks;
* **observability** — the tracing share and whether access lines are written.

Handlers are guarded and observed once, when they are registered
(:meth:`MeshServer.add_generic_rpc_handlers`), not by a per-call interceptor.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from meshlib._loop import BackgroundLoop
from meshlib._server_bind import Front, build_server
from meshlib._settings import MeshSettings
from meshlib.contract import DEFAULT_TRACING_SAMPLING, server_listener_name
from meshlib.errors import MeshError
from meshlib.security import Admission, guard_handler, rewrap_generic, rewrap_handler
from meshlib.xds import LISTENER, ServerListenerUpdate, WatcherFuncs

if TYPE_CHECKING:
    from meshlib.security import CertificateSource
    from meshlib.telemetry import MeshMetrics
    from meshlib.xds import XdsClient

__all__ = ["MeshServer", "ServerPolicy", "Servers", "server_listener_name"]

log = logging.getLogger("meshlib")


class ServerPolicy:
    """What the control plane says about one server address (set on the xDS thread):
    the mTLS mode, the :attr:`admission` (authorization, rate limit) and the
    observability settings."""

    def __init__(self, name: str = "") -> None:
        self.name = name  # the server Listener followed
        self.mode: str | None = None
        self.admission = Admission()
        self.sampling = DEFAULT_TRACING_SAMPLING  # MeshConfig tracing share, for root calls
        self.access_log = False  # MeshConfig access logs
        self.ready = threading.Event()

    def update(self, listener: object) -> None:
        """A server Listener update from the xDS client."""
        if not isinstance(listener, ServerListenerUpdate):
            return
        self.admission.configure(listener.authorization, listener.rate_limit)
        if self.mode is not None and listener.mtls_mode != self.mode:
            log.warning("mTLS mode of %s changed from %s to %s: restart the server to "
                        "apply it", listener.name, self.mode, listener.mtls_mode)
        else:
            self.mode = listener.mtls_mode
        self.sampling = listener.tracing_sampling
        self.access_log = listener.access_log
        self.ready.set()

    def removed(self) -> None:
        self.ready.set()  # no Listener for this address: the caller picks a default

    def observability(self) -> tuple[float, bool]:
        """(tracing sampling share, access logs on), as the control plane says now."""
        return self.sampling, self.access_log

    @property
    def authorization(self) -> Any:
        """The authorization policy in force (None: allow all)."""
        return self.admission.authorization


class MeshServer:
    """A ``grpc.Server`` (or ``grpc.aio.Server``) plus what the mesh runs beside it.

    Everything a gRPC server does is delegated; handlers added are guarded by the
    admission (authorization, rate limit) and observed (metrics, span, access log)
    once, at registration, not by a per-call interceptor; ``start``/``stop`` also run
    the PERMISSIVE front and stop following the control plane. ``port`` is the public
    port; ``mtls_mode`` the mode it serves.

    Example::

        server = mesh.server("reviews", port=50051)
        reviews_pb2_grpc.add_ReviewsServicer_to_server(Reviews(), server)
        server.start()
    """

    def __init__(self, server: Any, front: Front | None, *, port: int, mtls_mode: str,
                 on_stop: Callable[[], None], policy: ServerPolicy, service: str = "",
                 metrics: MeshMetrics | None = None) -> None:
        self._server = server
        self._service = service
        self._metrics = metrics
        self._policy = policy
        self._front = front
        self.port = port
        self.mtls_mode = mtls_mode
        self._on_stop = on_stop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)

    def _wrap(self, handler: Any, method: str, label: str | None = None) -> Any:
        guarded = guard_handler(handler, self._policy.admission.check, method)
        metrics = self._metrics
        if metrics is None or guarded is None:
            return guarded
        from meshlib.telemetry import server_wrappers  # telemetry on: imported once here

        wrapped = rewrap_handler(guarded, **server_wrappers(
            metrics, self._service, method, self._policy.observability, label=label))
        return _count_bytes(wrapped, metrics, *metrics.byte_counters(
            "server", self._service, label or method))

    def _wrap_unregistered(self, handler: Any, method: str) -> Any:
        """A handler a catch-all generic handler found for a name the caller chose:
        its metrics say ``_OTHER`` (as grpc's OpenTelemetry plugin says ``other``)."""
        if self._metrics is None:
            return self._wrap(handler, method)
        from meshlib.telemetry import OTHER

        return self._wrap(handler, method, OTHER)

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[Any]) -> None:
        """Add handlers, each guarded by the mesh's authorization and rate limit and
        timed for its metrics — once, here, not by a per-call interceptor."""
        self._server.add_generic_rpc_handlers(tuple(
            rewrap_generic(h, self._wrap, self._wrap_unregistered)
            for h in generic_rpc_handlers))

    def add_registered_method_handlers(self, service_name: str,
                                       method_handlers: dict[str, Any]) -> None:
        """Generated code's registration (grpcio ≥ 1.63), guarded the same way."""
        self._server.add_registered_method_handlers(service_name, {
            name: self._wrap(h, f"/{service_name}/{name}")
            for name, h in method_handlers.items()})

    def start(self) -> Any:
        """Start serving (and the PERMISSIVE front)."""
        result = self._server.start()
        if self._front is not None:
            self._front.start()
        return result

    def stop(self, grace: float | None) -> Any:
        """Stop serving and following the control plane."""
        if self._front is not None:
            self._front.stop()
        self._on_stop()
        return self._server.stop(grace)


def _count_bytes(handler: Any, metrics: MeshMetrics, on_request: Callable[[float], None],
                 on_response: Callable[[float], None]) -> Any:
    """``handler`` with its (de)serializers counting the bytes they see."""
    if not hasattr(handler, "_replace"):
        return handler
    serialize, deserialize = metrics.counting_codec(handler.response_serializer,
                                                    handler.request_deserializer,
                                                    on_response, on_request)
    return handler._replace(request_deserializer=deserialize, response_serializer=serialize)


class Servers:
    """The server side of a Mesh: :meth:`policy` follows a server address's Listener;
    :meth:`server` builds a :class:`MeshServer` for it. Made by
    :class:`~meshlib.Mesh`."""

    def __init__(self, settings: MeshSettings, loop: BackgroundLoop,
                 xds: Callable[[], XdsClient | None],
                 certificates: Callable[[], CertificateSource | None],
                 metrics: Callable[[], MeshMetrics | None]) -> None:
        self._settings = settings
        self._loop = loop
        self._xds = xds
        self._certificates = certificates
        self._metrics = metrics
        self.closed = False

    def policy(self, port: int, host: str = "[::]"
               ) -> tuple[ServerPolicy, Callable[[], None]]:
        """Follow the server Listener of ``host:port``; returns the policy, kept
        current, and the function that stops following it."""
        if self.closed:
            raise MeshError("this Mesh is closed")
        listener_host = "0.0.0.0" if host.strip("[]") in ("::", "", "0.0.0.0") \
            else host.strip("[]")
        policy = ServerPolicy(server_listener_name(listener_host, port))
        cancel: list[Callable[[], None]] = []

        def watch() -> None:
            client = self._xds()
            assert client is not None
            cancel.append(client.watch(LISTENER, policy.name, WatcherFuncs(
                changed=policy.update, removed=policy.removed)))
        self._loop.submit(watch).result()

        def stop_watching() -> None:
            for fn in cancel:
                self._loop.call_soon(fn)
        return policy, stop_watching

    def server(self, service: str, port: int, *, host: str, mtls: str | None,
               interceptors: Sequence[Any], options: Sequence[tuple[str, Any]],
               max_workers: int, aio: bool) -> MeshServer:
        """A sync (``aio=False``) or ``grpc.aio`` server for ``host:port``; see
        :meth:`meshlib.Mesh.server`."""
        if self.closed:
            raise MeshError("this Mesh is closed")
        if port == 0:
            port = _free_port(host)
        policy, stop_watching = self.policy(port, host)
        certificates = self._certificates()
        mode = mtls
        if mode is None:
            policy.ready.wait(self._settings.resolve_timeout)
            mode = policy.mode
            if mode is None:
                mode = "STRICT" if certificates is not None else "DISABLE"
                log.warning("no server Listener %s from the control plane; serving %s",
                            policy.name, mode)
        if mode == "PERMISSIVE" and certificates is None:
            # PERMISSIVE (the default) accepts plaintext; with no identity there is
            # nothing else to offer. Only worth a warning when the caller asked for it.
            log.log(logging.WARNING if mtls else logging.INFO,
                    "mTLS mode PERMISSIVE but this Mesh has no identity: serving %s in "
                    "plaintext only", policy.name)
            mode = "DISABLE"
        try:
            server, front = build_server(
                mode=mode, source=certificates, host=host, port=port,
                interceptors=interceptors, aio=aio, options=options,
                max_workers=max_workers, loop=self._loop.loop, service=service or "gRPC")
        except BaseException:
            stop_watching()
            raise
        return MeshServer(server, front, port=port, mtls_mode=mode, on_stop=stop_watching,
                          policy=policy, service=service, metrics=self._metrics())


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host.strip("[]") or "::", 0))
        return int(sock.getsockname()[1])
