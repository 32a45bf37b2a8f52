"""``Retry`` policy and the ``@retry`` decorator, on tenacity.

The decorator drives attempts with tenacity (``Retrying`` / ``AsyncRetrying``): at most
``attempts`` in all, waiting a random time in ``[0, backoff × 2^n]`` capped at
``max_backoff`` (full jitter), only on the listed codes or exception types, and only
while the optional :class:`RetryBudget` allows. While it runs, mesh channels called
inside make one attempt per call: the decorator owns the retries, so a local policy
and the control plane's never multiply.

Example::

    @retry(attempts=3, on=[grpc.StatusCode.UNAVAILABLE])
    def get_reviews(stub, request):
        return stub.Get(request, timeout=1.0)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import tenacity

from meshlib._call_context import RETRIES_OWNED
from meshlib._deadline import deadline_scope
from meshlib.errors import CircuitOpenError, DeadlineExceededError, RetryExhaustedError
from meshlib.resilience._budget import RetryBudget

__all__ = ["BudgetStop", "Condition", "Retry", "acall_with_retry", "call_with_retry"]

_T = TypeVar("_T")
Condition = grpc.StatusCode | type[BaseException]


class BudgetStop(tenacity.stop.stop_base):
    """Stop when the retry budget refuses. Put it last in ``stop_any``: it spends a
    token, so it should run only when nothing else stops the retry."""

    def __init__(self, budget: RetryBudget) -> None:
        self.budget = budget

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return not self.budget.try_spend()


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """A retry policy; share one object across functions (and its budget with it).

    ``on`` lists gRPC status codes and/or exception types worth another attempt.
    :class:`CircuitOpenError` is never retried: the circuit is open on purpose.
    """

    attempts: int = 3
    on: tuple[Condition, ...] = (grpc.StatusCode.UNAVAILABLE,)
    backoff: float = 0.025
    max_backoff: float = 1.0
    per_try_timeout: float | None = None
    budget: RetryBudget | None = None
    _codes: frozenset[grpc.StatusCode] = field(init=False, repr=False, compare=False)
    _types: tuple[type[BaseException], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.backoff < 0 or self.max_backoff < self.backoff:
            raise ValueError("need 0 <= backoff <= max_backoff")
        if self.per_try_timeout is not None and self.per_try_timeout <= 0:
            raise ValueError("per_try_timeout must be > 0")
        on = tuple(self.on)
        bad = [c for c in on if not isinstance(c, grpc.StatusCode)
               and not (isinstance(c, type) and issubclass(c, BaseException))]
        if bad:
            raise TypeError(f"retry on: expected grpc.StatusCode or exception types, got {bad}")
        object.__setattr__(self, "on", on)
        object.__setattr__(self, "_codes",
                           frozenset(c for c in on if isinstance(c, grpc.StatusCode)))
        object.__setattr__(self, "_types",
                           tuple(c for c in on if not isinstance(c, grpc.StatusCode)))

    def retryable(self, error: BaseException) -> bool:
        """Whether ``error`` is worth another attempt under this policy."""
        if isinstance(error, CircuitOpenError):
            return False
        if self._types and isinstance(error, self._types):
            return True
        if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
            return error.code() in self._codes
        return False

    def _tenacity(self, sleep: Callable[[float], Any] | None) -> dict[str, Any]:
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(self.attempts)
        if self.budget is not None:
            stop = tenacity.stop_any(stop, BudgetStop(self.budget))
        kwargs: dict[str, Any] = {
            "stop": stop,
            "wait": tenacity.wait_random_exponential(multiplier=self.backoff,
                                                     max=self.max_backoff),
            "retry": tenacity.retry_if_exception(self.retryable),
            "reraise": True,
        }
        if sleep is not None:
            kwargs["sleep"] = sleep
        return kwargs


def _exhausted(policy: Retry, error: BaseException, attempts: int, name: str) -> BaseException:
    if attempts > 1 and policy.retryable(error):
        return RetryExhaustedError(f"{name}: {attempts} attempts failed: {error}",
                                   attempts=attempts, last_error=error, service=name)
    return error


def call_with_retry(policy: Retry, fn: Callable[..., _T], args: tuple[Any, ...],
                    kwargs: dict[str, Any], *, sleep: Callable[[float], Any] | None = None,
                    name: str = "") -> _T:
    """Run ``fn(*args, **kwargs)`` under ``policy`` (what the decorator and the retry
    interceptor do)."""
    if policy.budget is not None:
        policy.budget.record_request()
    attempts = 0

    def attempt() -> _T:
        nonlocal attempts
        attempts += 1
        if policy.per_try_timeout is None:
            return fn(*args, **kwargs)
        with deadline_scope(policy.per_try_timeout):
            return fn(*args, **kwargs)

    token = RETRIES_OWNED.set(True)
    try:
        return tenacity.Retrying(**policy._tenacity(sleep or time.sleep))(attempt)
    except BaseException as err:
        final = _exhausted(policy, err, attempts, name)
        if final is err:
            raise
        raise final from err
    finally:
        RETRIES_OWNED.reset(token)


async def acall_with_retry(policy: Retry, fn: Callable[..., Awaitable[_T]],
                           args: tuple[Any, ...], kwargs: dict[str, Any], *,
                           sleep: Callable[[float], Awaitable[Any]] | None = None,
                           name: str = "") -> _T:
    """:func:`call_with_retry` for coroutine functions."""
    if policy.budget is not None:
        policy.budget.record_request()
    attempts = 0

    async def attempt() -> _T:
        nonlocal attempts
        attempts += 1
        if policy.per_try_timeout is None:
            return await fn(*args, **kwargs)
        with deadline_scope(policy.per_try_timeout):
            try:
                async with asyncio.timeout(policy.per_try_timeout):
                    return await fn(*args, **kwargs)
            except TimeoutError as err:
                raise DeadlineExceededError(
                    f"{name}: attempt {attempts} exceeded its {policy.per_try_timeout}s",
                    service=name) from err

    token = RETRIES_OWNED.set(True)
    try:
        return await tenacity.AsyncRetrying(**policy._tenacity(sleep or asyncio.sleep))(attempt)
    except BaseException as err:
        final = _exhausted(policy, err, attempts, name)
        if final is err:
            raise
        raise final from err
    finally:
        RETRIES_OWNED.reset(token)
