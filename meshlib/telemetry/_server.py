"""Server-side telemetry of ``mesh.server()`` handlers: metrics, a span, an access log.

:func:`server_wrappers` gives the four ``rewrap_handler`` wrappers that a
:class:`~meshlib._server.MeshServer` puts around each handler once, when it is
registered (outside the authorization guard, so refused calls are counted too):

* the call's ``traceparent`` (if any) is read from its metadata; the call is traced
  when its parent was, or — as a root — with the Listener's sampling share; a plain
  or coroutine handler runs with the call's context current, so the calls it makes
  through meshlib continue the trace (or its "not sampled");
* one request count and one duration observation, by method, code and caller;
* one access-log line, when MeshConfig turns them on.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import grpc

from meshlib.security import peer_address, peer_principal
from meshlib.telemetry._access_log import write_access_log
from meshlib.telemetry._metrics import HTTP_METHODS, OTHER, MeshMetrics, caller_label
from meshlib.telemetry._tracing import TRACEPARENT, ServerSpan, start_server_span

__all__ = ["Observability", "ServerCall", "ServerObserver", "code_of", "server_wrappers"]

_OK = grpc.StatusCode.OK
_perf = time.perf_counter
#: Returns (tracing sampling share, access logs on) for the server's address now.
Observability = Callable[[], tuple[float, bool]]


def _no_observability() -> tuple[float, bool]:
    return 0.0, False


class ServerObserver:
    """The telemetry of one server's calls — gRPC (``mesh.server()``) or HTTP (the
    ASGI/WSGI middleware): a SERVER span continuing the caller's trace, the golden
    metrics (when ``metrics`` is given) and an access-log line when the control
    plane turns them on.

    Example::

        observer = ServerObserver(mesh.metrics, "reviews", "http", policy.observability)
        call = observer.begin("GET", request.headers.get("traceparent"), headers)
        ...                                   # the application answers
        call.end("GET", "200", False, principal, log_method="GET /reviews/1")
    """

    __slots__ = ("methods", "metrics", "observe", "protocol", "service")

    def __init__(self, metrics: MeshMetrics | None, service: str, protocol: str,
                 observe: Observability | None = None) -> None:
        self.metrics = metrics
        self.service = service
        self.protocol = protocol
        self.observe = observe or _no_observability
        # The caller picks an HTTP method: the metrics see a known one or _OTHER.
        self.methods = HTTP_METHODS if protocol == "http" else None

    def begin(self, name: str, traceparent: str | None,
              carrier: Callable[[], Mapping[str, str]] | None,
              attributes: Mapping[str, Any], *, attach: bool = True) -> ServerCall:
        """A call arrives: its span is ``name`` (``attach``: current while the handler
        runs, so calls it makes continue the trace)."""
        sampling, log = self.observe()
        span = start_server_span(name, traceparent, carrier, sampling, attributes,
                                 attach=attach)
        return ServerCall(self, span, log)


class ServerCall:
    """One call a :class:`ServerObserver` is watching; :meth:`end` it once."""

    __slots__ = ("log", "observer", "span", "started")

    def __init__(self, observer: ServerObserver, span: ServerSpan, log: bool) -> None:
        self.observer = observer
        self.span = span
        self.log = log
        self.started = _perf()

    def end(self, method: str, code: str, error: bool, principal: str | None, *,
            request_bytes: int | None = None, response_bytes: int | None = None,
            log_method: str | None = None, attributes: Mapping[str, Any] | None = None,
            source_address: str | None = None) -> None:
        """The call ended with ``code`` (a gRPC code name or an HTTP status) from the
        caller ``principal`` (its SPIFFE ID, or None) at ``source_address`` (for the
        access log: give it when :attr:`log` is set). An HTTP ``method`` not in
        :data:`~meshlib.telemetry._metrics.HTTP_METHODS` is counted as ``_OTHER``
        (the access log keeps it)."""
        seconds = _perf() - self.started
        observer = self.observer
        caller = caller_label(principal)
        metrics = observer.metrics
        if metrics is not None:
            methods = observer.methods
            label = method if methods is None else methods.get(method, OTHER)
            metrics.record_server(observer.service, label, code, caller, seconds)
            if request_bytes is not None or response_bytes is not None:
                on_request, on_response = metrics.byte_counters("server", observer.service,
                                                                label)
                if request_bytes:
                    on_request(request_bytes)
                on_response(response_bytes or 0)
        span = self.span
        trace_id, span_id = span.ids if self.log else ("", "")
        span.end(code, error, {**(attributes or {}), "meshlib.source_identity": caller})
        if self.log:
            write_access_log(
                "server", observer.protocol, started=time.time() - seconds, seconds=seconds,
                source_identity=principal,
                source_address=source_address,
                destination_service=observer.service or None,
                method=log_method or method, code=code, request_bytes=request_bytes,
                response_bytes=response_bytes, trace_id=trace_id or None,
                span_id=span_id or None)


def _traceparent(context: Any) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == TRACEPARENT:
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


def server_wrappers(metrics: MeshMetrics, service: str, method: str,
                    observe: Observability, *, label: str | None = None
                    ) -> dict[str, Callable[..., Any]]:
    """The four ``rewrap_handler`` wrappers that observe a handler of ``method``;
    its metrics say ``label`` (default: ``method``; ``_OTHER`` for a method the caller
    named and no registration did)."""
    observer = ServerObserver(metrics, service, "grpc", observe)
    label = label or method
    log_method = None if label == method else method
    span_name = f"Recv.{method.lstrip('/')}"
    attributes = {"rpc.system": "grpc", "rpc.method": method,
                  "meshlib.destination": service}

    def begin(context: Any, attach: bool) -> ServerCall:
        def carrier() -> dict[str, str]:
            return {k: v for k, v in context.invocation_metadata() or ()
                    if isinstance(v, str)}

        return observer.begin(span_name, _traceparent(context), carrier, attributes,
                              attach=attach)

    def done(context: Any, call: ServerCall, code: grpc.StatusCode | None) -> None:
        if code is None:
            code = code_of(context)
        call.end(label, code.name, code is not _OK, peer_principal(context),
                 log_method=log_method,
                 source_address=peer_address(context) if call.log else None)

    def plain(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(behaviour)
        def run(request: Any, context: Any) -> Any:
            call = begin(context, True)
            try:
                response = behaviour(request, context)
            except BaseException:
                done(context, call, None)
                raise
            done(context, call, code_of(context, _OK))
            return response
        return run

    def generator(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(behaviour)
        def run(request: Any, context: Any) -> Iterator[Any]:
            call = begin(context, False)
            try:
                yield from behaviour(request, context)
            except BaseException:
                done(context, call, None)
                raise
            done(context, call, code_of(context, _OK))
        return run

    def coroutine(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(behaviour)
        async def run(request: Any, context: Any) -> Any:
            call = begin(context, True)
            try:
                response = await behaviour(request, context)
            except BaseException:
                done(context, call, None)
                raise
            done(context, call, code_of(context, _OK))
            return response
        return run

    def async_gen(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(behaviour)
        async def run(request: Any, context: Any) -> AsyncIterator[Any]:
            call = begin(context, False)
            try:
                async for response in behaviour(request, context):
                    yield response
            except BaseException:
                done(context, call, None)
                raise
            done(context, call, code_of(context, _OK))
        return run

    return {"plain": plain, "generator": generator, "coroutine": coroutine,
            "async_gen": async_gen}


def code_of(context: Any, default: grpc.StatusCode = grpc.StatusCode.UNKNOWN
            ) -> grpc.StatusCode:
    """The code a handler set (``context.set_code`` or ``abort``), else ``default``."""
    try:
        code = context.code()
    except Exception:  # a context without code(): older grpcio
        return default
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return code
    for status in grpc.StatusCode:  # aio contexts may report the raw integer
        if status.value[0] == code:
            return status
    return default
