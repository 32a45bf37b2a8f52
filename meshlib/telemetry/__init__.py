"""Telemetry: golden metrics (Prometheus), tracing (OpenTelemetry, W3C trace context)
and access logs (JSON lines), client and server side (docs/telemetry.md).

* :class:`MeshMetrics` — a Mesh's metrics registry (``mesh.metrics``);
* :class:`ClientTelemetry` — what the call pipeline records per client call: a
  :class:`CallRecord` (traced or logged calls) or a :class:`Counted` (most calls:
  counted and timed only);
* :class:`ServerObserver` — the span, metrics and access line of each server call,
  gRPC (``mesh.server()``, through :func:`server_wrappers`) or HTTP (the ASGI/WSGI
  middleware);
* :func:`write_access_log`, the line format (:data:`ACCESS_LOG_FIELDS`), and the W3C
  ``traceparent`` helpers.

Names are imported on first use (:mod:`meshlib._lazy`): a Mesh with telemetry off
never imports OpenTelemetry or prometheus_client.
"""

from typing import TYPE_CHECKING

from meshlib._lazy import lazy_exports

if TYPE_CHECKING:
    from meshlib.telemetry._access_log import (
        ACCESS_LOG_FIELDS,
        access_logger,
        write_access_log,
    )
    from meshlib.telemetry._client import CallRecord, ClientTelemetry, Counted, Record
    from meshlib.telemetry._metrics import (
        HTTP_METHODS,
        OTHER,
        MeshMetrics,
        caller_label,
        counting_codec,
    )
    from meshlib.telemetry._server import (
        Observability,
        ServerCall,
        ServerObserver,
        code_of,
        server_wrappers,
    )
    from meshlib.telemetry._tally import DURATION_BUCKETS, FOLD_AT, Durations, Total
    from meshlib.telemetry._tracing import (
        TRACEPARENT,
        ServerSpan,
        format_traceparent,
        parse_traceparent,
        start_server_span,
        tracer,
        w3c_only,
    )

__all__ = [
    "ACCESS_LOG_FIELDS",
    "DURATION_BUCKETS",
    "FOLD_AT",
    "HTTP_METHODS",
    "OTHER",
    "TRACEPARENT",
    "CallRecord",
    "ClientTelemetry",
    "Counted",
    "Durations",
    "MeshMetrics",
    "Observability",
    "Record",
    "ServerCall",
    "ServerObserver",
    "ServerSpan",
    "Total",
    "access_logger",
    "caller_label",
    "code_of",
    "counting_codec",
    "format_traceparent",
    "parse_traceparent",
    "server_wrappers",
    "start_server_span",
    "tracer",
    "w3c_only",
    "write_access_log",
]
__getattr__, __dir__ = lazy_exports(__name__, __file__)
