"""Resilience policies and decorators, usable with or without a mesh.

* :class:`CircuitBreaker` — pybreaker with an injectable clock and admit/record;
* :class:`RetryBudget` — retries as a share of recent requests plus a floor per second;
* :class:`RateLimit` — a token bucket;
* :class:`Retry` — a retry policy, and :class:`RetryRun`, the one retry engine (on
  tenacity) that the decorators, the retry interceptors and the mesh's own channels
  and HTTP transports all step through;
* deadline propagation: :func:`current_deadline`, :func:`deadline_scope` and the
  helpers servers and interceptors use to set and cap it;
* the decorators :func:`retry`, :func:`circuit_breaker`, :func:`timeout` and
  :func:`rate_limit`, for any sync or async callable, composable in any order.

Example::

    @retry(attempts=3, on=[grpc.StatusCode.UNAVAILABLE])
    @circuit_breaker(failures=5, reset_timeout=30)
    @timeout(2.0)
    async def get_reviews(request): ...

See ``docs/resilience.md`` for how they compose with the mesh's own policies.
"""

from meshlib.resilience._breaker import FAILURE_CODES, CircuitBreaker, circuit_breaker, is_failure
from meshlib.resilience._budget import (
    DEFAULT_MIN_RETRIES_PER_SECOND,
    DEFAULT_RETRY_BUDGET_PERCENT,
    DEFAULT_RETRY_BUDGET_WINDOW,
    RetryBudget,
)
from meshlib.resilience._clock import Clock, Sleep, async_sleep
from meshlib.resilience._deadline import (
    DEADLINE,
    cap_timeout,
    current_deadline,
    deadline_scope,
    earliest,
    remaining,
    reset_deadline,
    run_within,
    set_deadline,
)
from meshlib.resilience._rate_limit import RateLimit, rate_limit
from meshlib.resilience._retry import (
    DEFAULT_BACKOFF,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_RETRY_ATTEMPTS,
    DEFAULT_RETRY_ON,
    RETRIES_OWNED,
    Retry,
    RetryRules,
    RetryRun,
    acall_with_retry,
    call_with_retry,
    retry,
)
from meshlib.resilience._timeout import timeout

__all__ = [
    "DEADLINE",
    "DEFAULT_BACKOFF",
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_MIN_RETRIES_PER_SECOND",
    "DEFAULT_RETRY_ATTEMPTS",
    "DEFAULT_RETRY_BUDGET_PERCENT",
    "DEFAULT_RETRY_BUDGET_WINDOW",
    "DEFAULT_RETRY_ON",
    "FAILURE_CODES",
    "RETRIES_OWNED",
    "CircuitBreaker",
    "Clock",
    "RateLimit",
    "Retry",
    "RetryBudget",
    "RetryRules",
    "RetryRun",
    "Sleep",
    "acall_with_retry",
    "async_sleep",
    "call_with_retry",
    "cap_timeout",
    "circuit_breaker",
    "current_deadline",
    "deadline_scope",
    "earliest",
    "is_failure",
    "rate_limit",
    "remaining",
    "reset_deadline",
    "retry",
    "run_within",
    "set_deadline",
    "timeout",
]
