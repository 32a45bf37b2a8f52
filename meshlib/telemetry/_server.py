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
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc

from meshlib.security._peer import peer_principal
from meshlib.telemetry._access_log import write_access_log
from meshlib.telemetry._metrics import MeshMetrics, caller_label
from meshlib.telemetry._tracing import TRACEPARENT, ServerSpan, start_server_span

__all__ = ["Observability", "code_of", "server_wrappers"]

_OK = grpc.StatusCode.OK
_perf = time.perf_counter
#: Returns (tracing sampling share, access logs on) for the server's address now.
Observability = Callable[[], tuple[float, bool]]


def _traceparent(context: Any) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == TRACEPARENT:
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


def server_wrappers(metrics: MeshMetrics, service: str, method: str,
                    observe: Observability) -> dict[str, Callable[..., Any]]:
    """The four ``rewrap_handler`` wrappers that observe a handler of ``method``."""
    record = metrics.record_server
    span_name = f"Recv.{method.lstrip('/')}"
    attributes = {"rpc.system": "grpc", "rpc.method": method,
                  "meshlib.destination": service}

    def begin(context: Any, attach: bool) -> tuple[float, ServerSpan, bool]:
        sampling, log = observe()

        def carrier() -> dict[str, str]:
            return {k: v for k, v in context.invocation_metadata() or ()
                    if isinstance(v, str)}

        span = start_server_span(span_name, _traceparent(context), carrier, sampling,
                                 attributes, attach=attach)
        return _perf(), span, log

    def done(context: Any, started: float, span: ServerSpan, log: bool,
             code: grpc.StatusCode | None) -> None:
        seconds = _perf() - started
        if code is None:
            code = code_of(context)
        principal = peer_principal(context)
        caller = caller_label(principal)
        record(service, method, code, caller, seconds)
        trace_id, span_id = span.ids if log else ("", "")
        span.end(code.name, code is not _OK, {"meshlib.source_identity": caller})
        if log:
            write_access_log(
                "server", "grpc", started=time.time() - seconds, seconds=seconds,
                source_identity=principal, destination_service=service or None,
                method=method, code=code.name, trace_id=trace_id or None,
                span_id=span_id or None)

    def plain(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(behaviour)
        def run(request: Any, context: Any) -> Any:
            started, span, log = begin(context, True)
            try:
                response = behaviour(request, context)
            except BaseException:
                done(context, started, span, log, None)
                raise
            done(context, started, span, log, code_of(context, _OK))
            return response
        return run

    def generator(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(behaviour)
        def run(request: Any, context: Any) -> Iterator[Any]:
            started, span, log = begin(context, False)
            try:
                yield from behaviour(request, context)
            except BaseException:
                done(context, started, span, log, None)
                raise
            done(context, started, span, log, code_of(context, _OK))
        return run

    def coroutine(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(behaviour)
        async def run(request: Any, context: Any) -> Any:
            started, span, log = begin(context, True)
            try:
                response = await behaviour(request, context)
            except BaseException:
                done(context, started, span, log, None)
                raise
            done(context, started, span, log, code_of(context, _OK))
            return response
        return run

    def async_gen(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(behaviour)
        async def run(request: Any, context: Any) -> AsyncIterator[Any]:
            started, span, log = begin(context, False)
            try:
                async for response in behaviour(request, context):
                    yield response
            except BaseException:
                done(context, started, span, log, None)
                raise
            done(context, started, span, log, code_of(context, _OK))
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
