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

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.status import Status, StatusCode

from meshlib.telemetry._access_log import write_access_log
from meshlib.telemetry._tracing import TRACEPARENT, format_traceparent, tracer, w3c_only

if TYPE_CHECKING:
    from meshlib._cluster_state import EndpointState
    from meshlib.telemetry._metrics import MeshMetrics

__all__ = ["CallRecord", "ClientTelemetry"]

_perf = time.perf_counter
_CLIENT = SpanKind.CLIENT
_INTERNAL = SpanKind.INTERNAL
_random = random.random
_getrandbits = random.getrandbits

Headers = Sequence[tuple[str, Any]] | None


class ClientTelemetry:
    """What a Mesh records about its outgoing calls; one per Mesh, shared by its
    channels and HTTP clients."""

    def __init__(self, metrics: MeshMetrics, source_service: str) -> None:
        self.metrics = metrics
        self.source = source_service or "unknown"
        self._w3c = w3c_only()

    def start(self, target: str, route: str, backend: str, method: str, headers: Headers,
              sampling: float, access_log: bool, protocol: str = "grpc") -> CallRecord:
        """A routed call begins: ``route`` is the route's name, ``backend`` the
        cluster's service, ``sampling`` and ``access_log`` the target's settings."""
        record = CallRecord(self, target, route, backend, method, protocol)
        parent = trace.get_current_span().get_span_context()
        if parent.trace_flags.sampled if parent.is_valid else _random() < sampling:
            record.start_span(parent.is_valid)
        if record.span is None:  # not sampled: pass the decision on, cheaply
            if self._w3c and not parent.trace_state:
                if parent.is_valid:
                    ids = (parent.trace_id, _getrandbits(64) or 1)
                else:
                    ids = (_getrandbits(128) or 1, _getrandbits(64) or 1)
                record.trace_ids = ids
                value = format_traceparent(ids[0], ids[1], False)
                headers = (*headers, (TRACEPARENT, value)) if headers else \
                    ((TRACEPARENT, value),)
            else:
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                headers = (*(headers or ()), *carrier.items())
        record.headers = headers
        record.log = access_log
        return record


class CallRecord:
    """One client call's telemetry (see :class:`ClientTelemetry`)."""

    __slots__ = ("_attempt_span", "_ctx", "attempts", "backend", "headers", "log", "method",
                 "protocol", "route", "span", "started", "target", "telemetry", "trace_ids",
                 "upstream", "wall")

    def __init__(self, telemetry: ClientTelemetry, target: str, route: str, backend: str,
                 method: str, protocol: str) -> None:
        self.telemetry = telemetry
        self.target = target
        self.route = route
        self.backend = backend
        self.method = method
        self.protocol = protocol
        self.started = _perf()
        self.wall = 0.0
        self.attempts = 0
        self.span: trace.Span | None = None
        self._attempt_span: trace.Span | None = None
        self._ctx: otel_context.Context | None = None
        self.headers: Headers = None
        self.log = False
        self.trace_ids: tuple[int, int] | None = None
        self.upstream = ""

    def start_span(self, has_parent: bool) -> None:
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

    def attempt(self, endpoint: EndpointState | str, headers: Headers = None) -> Headers:
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
        telemetry = self.telemetry
        telemetry.metrics.record_client(telemetry.source, self.target, self.route,
                                        self.backend, code, seconds, self.attempts)
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
                source_service=telemetry.source, destination_service=self.target,
                method=self.method, route=self.route, backend=self.backend,
                upstream=self.upstream or None, code=code, attempts=self.attempts,
                request_bytes=request_bytes, response_bytes=response_bytes,
                trace_id=trace_id, span_id=span_id)

    def ids(self) -> tuple[str | None, str | None]:
        """The call's (trace id, span id) in hex (None: no trace)."""
        if self.span is not None:
            ctx = self.span.get_span_context()
            return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
        if self.trace_ids is not None:
            return f"{self.trace_ids[0]:032x}", f"{self.trace_ids[1]:016x}"
        return None, None
