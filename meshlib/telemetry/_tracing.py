"""Tracing with OpenTelemetry: W3C trace context across every meshlib hop.

Spans follow gRFC A72's shape for gRPC: a client call is a ``Sent.<service>/<method>``
span with one ``Attempt.<service>/<method>`` child per attempt (retries included:
``meshlib.attempt``, the endpoint, the outcome), and a server call is a
``Recv.<service>/<method>`` span, child of the caller's attempt. HTTP calls use the
same shape, named by the HTTP method (``GET``, ``Attempt GET``).

Sampling is parent-based: a call with a parent follows its decision, and a call
without one (a root) is traced with the probability MeshConfig gives
(``tracing.sampling``, default 1 %), which reaches meshlib in the Listener's
``tracing.random_sampling``. Calls inside a request carry a ``traceparent``, sampled
or not, so the services behind them follow the same decision; a root call that is not
sampled sends none (a random header per call costs ~10 % CPU in gRPC Python) and the
next hop decides.

Spans go to the global OpenTelemetry ``TracerProvider``: configure exporters the
OpenTelemetry way (the SDK, ``OTEL_*`` variables, ``opentelemetry-instrument``).
Without an SDK, spans are no-ops and only the context travels.

The unsampled path is the hot one (99 % of calls at the default share): it writes the
``traceparent`` header itself (1 µs) instead of going through the propagator API
(7 µs), as long as the configured propagators are W3C's (the default).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

__all__ = [
    "TRACEPARENT",
    "ServerSpan",
    "format_traceparent",
    "parse_traceparent",
    "start_server_span",
    "tracer",
    "w3c_only",
]

TRACEPARENT = "traceparent"
_W3C_FIELDS = frozenset({"traceparent", "tracestate", "baggage"})
_HEX = frozenset("0123456789abcdef")
_getrandbits = random.getrandbits
_random = random.random
_SERVER = SpanKind.SERVER
_ROOT = otel_context.Context()


def tracer() -> trace.Tracer:
    """meshlib's tracer from the global provider (it follows a provider set later)."""
    return trace.get_tracer("meshlib")


def w3c_only() -> bool:
    """Whether the configured propagators write W3C headers only (then meshlib may
    format ``traceparent`` itself on the unsampled path)."""
    return set(propagate.get_global_textmap().fields) <= _W3C_FIELDS


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    """``00-<trace id>-<span id>-<flags>`` (W3C Trace Context, version 00)."""
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def parse_traceparent(value: str) -> SpanContext | None:
    """The remote span context of a ``traceparent`` header, or None if malformed."""
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
        return None
    version, trace_hex, span_hex, flags = parts[0], parts[1], parts[2], parts[3]
    if (not _HEX.issuperset(version) or len(trace_hex) != 32 or len(span_hex) != 16
            or len(flags) != 2 or not _HEX.issuperset(trace_hex) or not _HEX.issuperset(span_hex)
            or not _HEX.issuperset(flags) or (version == "00" and len(parts) != 4)):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True,
                       trace_flags=TraceFlags(int(flags, 16) & 1))


class ServerSpan:
    """One served call's trace: its span when sampled (else None), its context made
    current for the handler (nested meshlib calls become its children, or follow its
    "not sampled"), and ``end()``."""

    __slots__ = ("_token", "span")

    def __init__(self, span: trace.Span | None, token: object | None) -> None:
        self.span = span
        self._token = token

    @property
    def ids(self) -> tuple[str, str]:
        """(trace id, span id) in hex, or ("", "") when the call has no trace."""
        span = self.span
        if span is None:
            current = trace.get_current_span().get_span_context()
            if not current.is_valid:
                return "", ""
            return f"{current.trace_id:032x}", f"{current.span_id:016x}"
        ctx = span.get_span_context()
        return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"

    def detach(self) -> None:
        """Stop making this call's context current (before ``end`` in the same
        context it was attached in)."""
        token, self._token = self._token, None
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]

    def end(self, code: str, error: bool, attributes: Mapping[str, Any] | None = None
            ) -> None:
        """End the span with the call's outcome (``code``: a gRPC code name or an
        HTTP status)."""
        self.detach()
        span = self.span
        if span is None:
            return
        if attributes:
            span.set_attributes(attributes)
        if error:
            span.set_status(Status(StatusCode.ERROR, code))
        span.end()


def start_server_span(name: str, traceparent: str | None,
                      carrier: Callable[[], Mapping[str, str]] | None, sampling: float,
                      attributes: Mapping[str, Any], *, attach: bool = True) -> ServerSpan:
    """The trace of a call received with ``traceparent`` (None: a root, sampled with
    probability ``sampling``). ``carrier()`` gives the request's headers to the
    propagator when the call is sampled. ``attach``: make its context current."""
    parent = parse_traceparent(traceparent) if traceparent else None
    if parent is None:
        if _random() >= sampling:  # a root, not sampled: still give nested calls the no
            parent = SpanContext(_getrandbits(128) or 1, _getrandbits(64) or 1,
                                 is_remote=True, trace_flags=TraceFlags(0))
        else:
            span = tracer().start_span(name, context=_ROOT, kind=_SERVER,
                                       attributes=attributes)
            return ServerSpan(span, _attach(span, _ROOT) if attach else None)
    if not parent.trace_flags.sampled:
        if not attach:
            return ServerSpan(None, None)
        ctx = trace.set_span_in_context(NonRecordingSpan(parent), _ROOT)
        return ServerSpan(None, otel_context.attach(ctx))
    ctx = propagate.extract(carrier()) if carrier is not None else \
        trace.set_span_in_context(NonRecordingSpan(parent), _ROOT)
    span = tracer().start_span(name, context=ctx, kind=_SERVER, attributes=attributes)
    return ServerSpan(span, _attach(span, ctx) if attach else None)


def _attach(span: trace.Span, ctx: otel_context.Context) -> object:
    return otel_context.attach(trace.set_span_in_context(span, ctx))
