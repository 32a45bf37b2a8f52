"""Defaults both sides must agree on: what the control plane assumes when a field is
left out is what meshlib assumes when the setting does not arrive at all.

* the namespace of a node or object that names none (Kubernetes' ``default``);
* mTLS modes (``AccessPolicy`` / ``MeshConfig``) and the mesh default, PERMISSIVE;
* the retry budget (Linkerd's: 20 % of the requests of a 10 s window, plus 10
  retries a second);
* the per-endpoint circuit breaker (open after 5 consecutive failures, for 30 s,
  then 1 half-open probe) and the per-cluster cap on concurrent requests (gRFC A32's
  ``max_requests`` default, 1024);
* the share of root calls that start a trace (``MeshConfig`` tracing sampling, 1 %).
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "DEFAULT_BREAKER_FAILURES",
    "DEFAULT_BREAKER_HALF_OPEN_PROBES",
    "DEFAULT_BREAKER_OPEN_DURATION",
    "DEFAULT_MAX_REQUESTS",
    "DEFAULT_MIN_RETRIES_PER_SECOND",
    "DEFAULT_MTLS_MODE",
    "DEFAULT_NAMESPACE",
    "DEFAULT_RETRY_BUDGET_PERCENT",
    "DEFAULT_RETRY_BUDGET_WINDOW",
    "DEFAULT_TRACING_SAMPLING",
    "MTLS_MODES",
    "MtlsMode",
]

DEFAULT_NAMESPACE = "default"

#: ``STRICT``: mTLS only; ``PERMISSIVE``: mTLS and plaintext; ``DISABLE``: plaintext.
MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
MTLS_MODES: tuple[MtlsMode, ...] = ("STRICT", "PERMISSIVE", "DISABLE")
DEFAULT_MTLS_MODE: MtlsMode = "PERMISSIVE"

DEFAULT_RETRY_BUDGET_PERCENT = 20.0  # % of the window's requests
DEFAULT_MIN_RETRIES_PER_SECOND = 10.0
DEFAULT_RETRY_BUDGET_WINDOW = 10.0  # seconds

DEFAULT_BREAKER_FAILURES = 5  # consecutive failures that open an endpoint's breaker
DEFAULT_BREAKER_OPEN_DURATION = 30.0  # seconds open before half-open
DEFAULT_BREAKER_HALF_OPEN_PROBES = 1
DEFAULT_MAX_REQUESTS = 1024  # concurrent requests to one cluster

DEFAULT_TRACING_SAMPLING = 0.01  # share of root calls traced
