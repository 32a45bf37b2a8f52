"""Resilience policies and decorators, usable with or without a mesh.

* :class:`CircuitBreaker` — pybreaker with an injectable clock and admit/record;
* :class:`RetryBudget` — retries as a share of recent requests plus a floor per second;
* :class:`RateLimit` — a token bucket;
* :class:`Retry` — a retry policy run by tenacity;
* the decorators :func:`retry`, :func:`circuit_breaker`, :func:`timeout`,
  :func:`rate_limit` for any sync or async callable.

See ``docs/resilience.md`` for how they compose with the mesh's own policies.
"""

from meshlib.resilience._breaker import FAILURE_CODES, CircuitBreaker, is_failure
from meshlib.resilience._budget import (
    DEFAULT_MIN_RETRIES_PER_SECOND,
    DEFAULT_RETRY_BUDGET_PERCENT,
    DEFAULT_RETRY_BUDGET_WINDOW,
    RetryBudget,
)
from meshlib.resilience._decorators import circuit_breaker, rate_limit, retry, timeout
from meshlib.resilience._rate_limit import RateLimit
from meshlib.resilience._retry import Retry, acall_with_retry, call_with_retry

__all__ = [
    "DEFAULT_MIN_RETRIES_PER_SECOND",
    "DEFAULT_RETRY_BUDGET_PERCENT",
    "DEFAULT_RETRY_BUDGET_WINDOW",
    "FAILURE_CODES",
    "CircuitBreaker",
    "RateLimit",
    "Retry",
    "RetryBudget",
    "acall_with_retry",
    "call_with_retry",
    "circuit_breaker",
    "is_failure",
    "rate_limit",
    "retry",
    "timeout",
]
