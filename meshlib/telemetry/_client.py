"""Client-side telemetry of one call: metrics, trace spans, access log.

A channel asks :meth:`ClientTelemetry.start` for a :class:`CallRecord` once it has
routed a call, gives each attempt the metadata :meth:`CallRecord.attempt` returns,
reports each attempt's outcome, and :meth:`CallRecord.finish` es the call. Most
calls are not sampled: then the record only times the call and carries a
``traceparent`` with the sampled flag off, and finishing it is two cached metric
updates (~3 µs in all).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import baggage as _baggage
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.status import Status, StatusCode

from meshlib.telemetry._access_log import write_access_log
from meshlib.telemetry._tracing import TRACEPARENT, tracer, w3c_only

if TYPE_CHECKING:
    from meshlib._cluster_state import EndpointState
    from meshlib.telemetry._metrics import MeshMetrics

__all__ = ["CallRecord", "ClientTelemetry", "Counted", "Record"]

_perf = time.perf_counter
_CLIENT = SpanKind.CLIENT
_INTERNAL = SpanKind.INTERNAL
_random = random.random
_randbytes = random.randbytes
_current_span = trace.get_current_span
_INVALID = trace.INVALID_SPAN_CONTEXT

Headers = Sequence[tuple[str, Any]] | None


class ClientTelemetry:
    """What a Mesh records about its outgoing calls; one per Mesh, shared by its
    channels and HTTP clients."""

    def __init__(self, metrics: MeshMetrics, source_service: str) -> None:
        self.metrics = metrics
        self.source = source_service or "unknown"
        self._w3c = w3c_only()

    def start(self, target: str, route: str, backend: str, method: str, headers: Headers,
              sampling: float, access_log: bool, protocol: str = "grpc"
              ) -> Record:
        """A routed call begins: ``route`` is the route's name, ``backend`` the
        cluster's service, ``sampling`` and ``access_log`` the target's settings."""
        parent = _current_span().get_span_context()
        root = parent is _INVALID or not parent.is_valid
        sampled = parent.trace_flags.sampled if not root else _random() < sampling
        if root and not sampled and not access_log:
            return Counted(self.metrics, (target, route, backend), headers)  # most calls
        record = CallRecord(self, target, route, backend, method, protocol, access_log)
        if sampled:
            record.start_span()
        if record.span is None and not root:  # pass the parent's decision on
            if self._w3c and not parent.trace_state and not _baggage.get_all():
                ids = f"{parent.trace_id:032x}{_randbytes(8).hex()}"
                record.trace_hex = ids
                flags = "-01" if parent.trace_flags.sampled else "-00"  # no SDK: still 01
                value = "00-" + ids[:32] + "-" + ids[32:] + flags
                headers = (*headers, (TRACEPARENT, value)) if headers else \
                    ((TRACEPARENT, value),)
            else:
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                headers = (*(headers or ()), *carrier.items())
        record.headers = headers
        return record


def _count(metrics: MeshMetrics, labels: tuple[str, str, str], code: str, seconds: float,
           attempts: int) -> None:
    """Add one finished call to its client series (retries: the attempts after one)."""
    series = metrics._client.get((*labels, code))
    if series is None:
        series = metrics.client_series(*labels, code)
    series.add(seconds, max(attempts - 1, 0))


class Counted:
    """The telemetry of most calls — a root not sampled, no access log: only counted
    and timed (the same methods as :class:`CallRecord`, doing almost nothing)."""

    __slots__ = ("attempts", "headers", "labels", "metrics", "started")
    span = None
    log = False

    def __init__(self, metrics: MeshMetrics, labels: tuple[str, str, str],
                 headers: Headers) -> None:
        self.metrics = metrics
        self.labels = labels
        self.headers = headers
        self.attempts = 0
        self.started = _perf()

    def attempt(self, endpoint: EndpointState | str) -> Headers:
        self.attempts += 1
        return self.headers

    def attempt_end(self, code: str, error: bool) -> None:
        pass

    def finish(self, code: str, error: bool, request_bytes: int | None = None,
               response_bytes: int | None = None) -> None:
        _count(self.metrics, self.labels, code, _perf() - self.started, self.attempts)

    def ids(self) -> tuple[None, None]:
        return None, None


class CallRecord:
    """One client call's telemetry (see :class:`ClientTelemetry`): a sampled call, a
    call inside a trace (it passes the decision on) or one access-logged."""

    __slots__ = ("_attempt_span", "_ctx", "attempts", "backend", "headers", "log", "method",
                 "protocol", "route", "span", "started", "target", "telemetry", "trace_hex",
                 "upstream")

    def __init__(self, telemetry: ClientTelemetry, target: str, route: str, backend: str,
                 method: str, protocol: str, log: bool = False) -> None:
        self.telemetry = telemetry
        self.target = target
        self.route = route
        self.backend = backend
        self.method = method
        self.protocol = protocol
        self.log = log
        self.started = _perf()
        self.attempts = 0
        self.span: trace.Span | None = None
        self.headers: Headers = None
        self.trace_hex: str | None = None  # unsampled: trace id + span id, in hex
        self.upstream = ""

    def start_span(self) -> None:
        """Start the call's span (sampled); unsampled by the SDK, it is dropped."""
        name = (f"Sent.{self.method.lstrip('/')}" if self.protocol == "grpc"
                else self.method)
        span = tracer().start_span(name, kind=_CLIENT, attributes={
            "rpc.system": self.protocol, "meshlib.destination": self.target,
            "meshlib.route": self.route, "meshlib.backend": self.backend})
        if not span.is_recording():
            span.end()
            return
        self.span = span
        self._ctx = trace.set_span_in_context(span)
        self._attempt_span: trace.Span | None = None

    def attempt(self, endpoint: EndpointState | str) -> Headers:
        """An attempt begins on ``endpoint``: the headers (metadata) to send it with."""
        self.attempts += 1
        address = endpoint if isinstance(endpoint, str) else endpoint.address
        self.upstream = address
        if self.span is None:
            return self.headers
        name = (f"Attempt.{self.method.lstrip('/')}" if self.protocol == "grpc"
                else f"Attempt {self.method}")
        span = self._attempt_span = tracer().start_span(
            name, context=self._ctx, kind=_INTERNAL, attributes={
                "meshlib.attempt": self.attempts, "previous-rpc-attempts": self.attempts - 1,
                "server.address": address})
        carrier: dict[str, str] = {}
        propagate.inject(carrier, trace.set_span_in_context(span, self._ctx))
        return (*(self.headers or ()), *carrier.items())

    def attempt_end(self, code: str, error: bool) -> None:
        """The current attempt ended with ``code`` (a gRPC code name, HTTP status)."""
        if self.span is None:
            return
        span, self._attempt_span = self._attempt_span, None
        if span is not None:
            span.set_attribute("meshlib.outcome", code)
            if error:
                span.set_status(Status(StatusCode.ERROR, code))
            span.end()

    def finish(self, code: str, error: bool, request_bytes: int | None = None,
               response_bytes: int | None = None) -> None:
        """The call ended with ``code`` after its last attempt."""
        seconds = _perf() - self.started
        _count(self.telemetry.metrics, (self.target, self.route, self.backend), code, seconds,
               self.attempts)
        span = self.span
        if span is not None:
            span.set_attribute("meshlib.outcome", code)
            span.set_attribute("meshlib.attempts", self.attempts)
            if error:
                span.set_status(Status(StatusCode.ERROR, code))
            span.end()
        if self.log:
            trace_id, span_id = self.ids()
            write_access_log(
                "client", self.protocol, started=time.time() - seconds, seconds=seconds,
                source_service=self.telemetry.source, destination_service=self.target,
                method=self.method, route=self.route, backend=self.backend,
                upstream=self.upstream or None, code=code, attempts=self.attempts,
                request_bytes=request_bytes, response_bytes=response_bytes,
                trace_id=trace_id, span_id=span_id)

    def ids(self) -> tuple[str | None, str | None]:
        """The call's (trace id, span id) in hex (None: no trace)."""
        if self.span is not None:
            ctx = self.span.get_span_context()
            return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
        if self.trace_hex is not None:
            return self.trace_hex[:32], self.trace_hex[32:]
        return None, None


#: What :meth:`ClientTelemetry.start` returns; channels use either the same way.
Record = CallRecord | Counted
