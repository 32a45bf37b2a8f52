"""Access logs: one JSON line per call, client and server, gRPC and HTTP.

Off by default; MeshConfig ``accessLogs: {enabled: true}`` switches them on for the
whole mesh (it reaches meshlib as the Listener's ``access_log``, the field Envoy
sidecars use for the same lines). Lines go to the ``meshlib.access`` logger at INFO:
to stdout, one per line, unless the application put its own handlers on that logger.

Fields (docs/telemetry.md): ``time`` (RFC 3339, UTC), ``kind`` (``client`` or
``server``), ``protocol`` (``grpc`` or ``http``), ``source_service``,
``source_identity``, ``source_address`` (server lines: the caller's address, the real
one behind a PERMISSIVE front), ``destination_service``, ``method``, ``route``, ``backend``,
``upstream``, ``code``, ``duration_ms``, ``attempts``, ``request_bytes``,
``response_bytes``, ``trace_id``, ``span_id``. A field that does not apply is null.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["ACCESS_LOG_FIELDS", "access_logger", "write_access_log"]

#: Every line has exactly these keys, in this order.
ACCESS_LOG_FIELDS = ("time", "kind", "protocol", "source_service", "source_identity",
                     "source_address", "destination_service", "method", "route", "backend",
                     "upstream", "code", "duration_ms", "attempts", "request_bytes",
                     "response_bytes", "trace_id", "span_id")

_logger = logging.getLogger("meshlib.access")
_ready = False
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class _Stdout(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is at each line (it may be replaced)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def access_logger() -> logging.Logger:
    """The ``meshlib.access`` logger. Unless the application gave it handlers of its
    own, meshlib gives it one writing bare lines to stdout and stops it propagating
    (a root handler's format would wrap the JSON)."""
    global _ready
    if not _ready:
        _ready = True
        if not _logger.handlers:
            handler = _Stdout()
            handler.setFormatter(logging.Formatter("%(message)s"))
            _logger.addHandler(handler)
            _logger.propagate = False
        if _logger.level == logging.NOTSET:
            _logger.setLevel(logging.INFO)
    return _logger


def write_access_log(kind: str, protocol: str, *, started: float, seconds: float,
                     **fields: Any) -> None:
    """Write one line; ``started`` is the call's wall-clock start (``time.time()``)."""
    logger = access_logger()
    if not logger.isEnabledFor(logging.INFO):
        return
    line = dict.fromkeys(ACCESS_LOG_FIELDS)
    line.update(fields)
    line["time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)) + \
        f".{int(started % 1 * 1000):03d}Z"
    line["kind"] = kind
    line["protocol"] = protocol
    line["duration_ms"] = round(seconds * 1000, 3)
    logger.info(_dumps(line))
