"""The ``Retry`` policy and the ``@retry`` decorator, driven by tenacity.

tenacity (``Retrying`` / ``AsyncRetrying``) runs the attempts: at most ``attempts`` in
all, waiting a random time in ``[0, backoff × 2^n]`` capped at ``max_backoff`` (full
jitter, tenacity's ``wait_random_exponential``), only on the listed codes or exception
types, never past the deadline in force, and only while the optional
:class:`RetryBudget` allows. The first attempt runs before any tenacity object is
built, so a call that succeeds pays for no retry machinery.

While a retrying call runs, ``meshlib._call_context.RETRIES_OWNED`` is true: mesh
channels called inside make one attempt per call and leave retrying to it, so a local
policy and the control plane's never multiply.

What the caller sees when the call fails:

* every attempt failed with a retryable error: :class:`~meshlib.RetryExhaustedError`
  (a ``grpc.RpcError`` with the last attempt's code), raised from the last error;
* an error not worth retrying, or retries cut short by the budget or the deadline:
  that last error, unchanged.

Example::

    @retry(attempts=3, on=[grpc.StatusCode.UNAVAILABLE])
    def get_reviews(stub, request):
        return stub.Get(request, timeout=1.0)
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import tenacity

from meshlib._call_context import RETRIES_OWNED
from meshlib._deadline import current_deadline, reset_deadline, set_deadline
from meshlib.errors import CircuitOpenError, DeadlineExceededError, RetryExhaustedError
from meshlib.resilience._budget import RetryBudget
from meshlib.resilience._clock import Clock, Sleep, async_sleep, callable_name

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_RETRY_ATTEMPTS",
    "DEFAULT_RETRY_ON",
    "BudgetStop",
    "Condition",
    "DeadlineStop",
    "Retry",
    "acall_with_retry",
    "call_with_retry",
    "retry",
]

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])
Condition = grpc.StatusCode | type[BaseException]

DEFAULT_RETRY_ATTEMPTS = 3
DEFAULT_RETRY_ON: tuple[Condition, ...] = (grpc.StatusCode.UNAVAILABLE,)
DEFAULT_BACKOFF = 0.025
DEFAULT_MAX_BACKOFF = 1.0


class BudgetStop(tenacity.stop.stop_base):
    """Stop when the retry budget refuses. Put it last in ``stop_any``: it spends a
    token, so it must run only when nothing else stops the retry."""

    def __init__(self, budget: RetryBudget) -> None:
        self.budget = budget

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return not self.budget.try_spend()


class DeadlineStop(tenacity.stop.stop_base):
    """Stop when the next wait would end at or past ``deadline`` (a ``clock`` instant)."""

    def __init__(self, deadline: float, clock: Clock = time.monotonic) -> None:
        self.deadline = deadline
        self.clock = clock

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.clock() + (retry_state.upcoming_sleep or 0.0) >= self.deadline


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """A retry policy; share one object across functions (and its budget with it).

    ``on`` lists gRPC status codes and/or exception types worth another attempt.
    With ``per_try_timeout``, each attempt runs under that deadline, and an attempt
    that ran out (DEADLINE_EXCEEDED) is retried too. :class:`~meshlib.CircuitOpenError`
    is not retried unless ``on`` names it (or a subclass) as a type: the circuit is
    open on purpose.

    Example::

        policy = Retry(attempts=4, on=(grpc.StatusCode.UNAVAILABLE, ConnectionError),
                       per_try_timeout=0.5, budget=RetryBudget())

        @retry(policy=policy)
        def charge(request): ...
    """

    attempts: int = DEFAULT_RETRY_ATTEMPTS
    on: tuple[Condition, ...] = DEFAULT_RETRY_ON
    backoff: float = DEFAULT_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    per_try_timeout: float | None = None
    budget: RetryBudget | None = None
    _codes: frozenset[grpc.StatusCode] = field(init=False, repr=False, compare=False)
    _types: tuple[type[BaseException], ...] = field(init=False, repr=False, compare=False)
    _retry_open: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.backoff < 0 or self.max_backoff < self.backoff:
            raise ValueError(f"need 0 <= backoff <= max_backoff, got {self.backoff} and "
                             f"{self.max_backoff}")
        if self.per_try_timeout is not None and self.per_try_timeout <= 0:
            raise ValueError(f"per_try_timeout must be > 0, got {self.per_try_timeout}")
        on = tuple(self.on)
        bad = [c for c in on if not isinstance(c, grpc.StatusCode)
               and not (isinstance(c, type) and issubclass(c, BaseException))]
        if bad:
            raise TypeError(f"retry on: expected grpc.StatusCode or exception types, got {bad}")
        types = tuple(c for c in on if not isinstance(c, grpc.StatusCode))
        object.__setattr__(self, "on", on)
        object.__setattr__(self, "_codes",
                           frozenset(c for c in on if isinstance(c, grpc.StatusCode)))
        object.__setattr__(self, "_types", types)
        object.__setattr__(self, "_retry_open",
                           any(issubclass(t, CircuitOpenError) for t in types))

    def retryable(self, error: BaseException) -> bool:
        """Whether ``error`` is worth another attempt under this policy."""
        if isinstance(error, CircuitOpenError):
            return self._retry_open
        if self._types and isinstance(error, self._types):
            return True
        if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
            code = error.code()
            return code in self._codes or (code == grpc.StatusCode.DEADLINE_EXCEEDED
                                           and self.per_try_timeout is not None)
        return False


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None or a <= b else b


class _Run:
    """One call's retry state, shared by the sync and the async driver."""

    __slots__ = ("attempts", "clock", "deadline", "name", "pending", "policy")

    def __init__(self, policy: Retry, name: str, deadline: float | None,
                 clock: Clock) -> None:
        self.policy = policy
        self.name = name
        self.deadline = deadline
        self.clock = clock
        self.attempts = 0
        self.pending: BaseException | None = None  # the first failure, for tenacity

    def worth_retrying(self, error: BaseException) -> bool:
        return self.policy.attempts > 1 and self.policy.retryable(error)

    def replay(self) -> None:
        """tenacity's first "attempt" re-raises the first failure, so its stop, wait
        and budget rules apply to every retry alike."""
        error, self.pending = self.pending, None
        if error is not None:
            raise error

    def tenacity_kwargs(self, sleep: Callable[[float], Any]) -> dict[str, Any]:
        policy = self.policy
        stops: list[tenacity.stop.stop_base] = [tenacity.stop_after_attempt(policy.attempts)]
        if self.deadline is not None:
            stops.append(DeadlineStop(self.deadline, self.clock))
        if policy.budget is not None:
            stops.append(BudgetStop(policy.budget))  # last: it spends a token
        return {
            "stop": tenacity.stop_any(*stops),
            "wait": tenacity.wait_random_exponential(multiplier=policy.backoff,
                                                     max=policy.max_backoff),
            "retry": tenacity.retry_if_exception(policy.retryable),
            "reraise": True,
            "sleep": sleep,
        }

    def final(self, error: BaseException) -> BaseException:
        """What the call raises once tenacity gave up with ``error``."""
        if self.attempts < self.policy.attempts or not self.policy.retryable(error):
            return error  # not retryable, or cut short by the budget or the deadline
        code = error.code() if isinstance(error, grpc.RpcError) and hasattr(
            error, "code") else None
        last = code.name if isinstance(code, grpc.StatusCode) else type(error).__name__
        return RetryExhaustedError(
            f"{self.name}: {self.attempts} attempts failed, the last with {last}: {error}",
            attempts=self.attempts, last_error=error, service=self.name)

    def attempt(self, fn: Callable[..., _T], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> _T:
        self.attempts += 1
        per_try = self.policy.per_try_timeout
        if per_try is None:
            return fn(*args, **kwargs)
        token = set_deadline(self.clock() + per_try)
        try:
            return fn(*args, **kwargs)
        finally:
            reset_deadline(token)

    async def aattempt(self, fn: Callable[..., Awaitable[_T]], args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> _T:
        self.attempts += 1
        per_try = self.policy.per_try_timeout
        if per_try is None:
            return await fn(*args, **kwargs)
        start = self.clock()
        outer = current_deadline()
        deadline = start + per_try if outer is None else min(outer, start + per_try)
        left = deadline - start
        token = set_deadline(deadline)
        scope = asyncio.timeout(left)
        try:
            async with scope:
                return await fn(*args, **kwargs)
        except TimeoutError as err:
            if not scope.expired():
                raise
            raise DeadlineExceededError(
                f"{self.name}: attempt {self.attempts} got no result within {left:.3f}s",
                service=self.name) from err
        finally:
            reset_deadline(token)


def call_with_retry(policy: Retry, fn: Callable[..., _T], args: tuple[Any, ...] = (),
                    kwargs: dict[str, Any] | None = None, *, sleep: Sleep | None = None,
                    clock: Clock | None = None, deadline: float | None = None,
                    name: str = "") -> _T:
    """Run ``fn(*args, **kwargs)`` under ``policy`` — what ``@retry`` and
    ``interceptors.RetryClientInterceptor`` do. No attempt starts after ``deadline``
    or the deadline in force, whichever is sooner."""
    kwargs = kwargs or {}
    now = time.monotonic if clock is None else clock
    if policy.budget is not None:
        policy.budget.record_request()
    run = _Run(policy, name or callable_name(fn), _earliest(current_deadline(), deadline),
               now)
    token = RETRIES_OWNED.set(True)
    try:
        try:
            return run.attempt(fn, args, kwargs)
        except Exception as err:
            if not run.worth_retrying(err):
                raise
            run.pending = err

        def again() -> _T:
            run.replay()
            return run.attempt(fn, args, kwargs)

        try:
            wait = time.sleep if sleep is None else sleep
            return tenacity.Retrying(**run.tenacity_kwargs(wait))(again)
        except Exception as err:
            final = run.final(err)
            if final is err:
                raise
            raise final from err
    finally:
        RETRIES_OWNED.reset(token)


async def acall_with_retry(policy: Retry, fn: Callable[..., Awaitable[_T]],
                           args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
                           *, sleep: Sleep | None = None, clock: Clock | None = None,
                           deadline: float | None = None, name: str = "") -> _T:
    """:func:`call_with_retry` for coroutine functions. ``sleep`` may be a coroutine
    function or a plain callable (default ``asyncio.sleep``)."""
    kwargs = kwargs or {}
    now = time.monotonic if clock is None else clock
    if policy.budget is not None:
        policy.budget.record_request()
    run = _Run(policy, name or callable_name(fn), _earliest(current_deadline(), deadline),
               now)
    token = RETRIES_OWNED.set(True)
    try:
        try:
            return await run.aattempt(fn, args, kwargs)
        except Exception as err:
            if not run.worth_retrying(err):
                raise
            run.pending = err

        async def again() -> _T:
            run.replay()
            return await run.aattempt(fn, args, kwargs)

        try:
            return await tenacity.AsyncRetrying(
                **run.tenacity_kwargs(async_sleep(sleep)))(again)
        except Exception as err:
            final = run.final(err)
            if final is err:
                raise
            raise final from err
    finally:
        RETRIES_OWNED.reset(token)


def retry(attempts: int = DEFAULT_RETRY_ATTEMPTS, on: Iterable[Condition] = DEFAULT_RETRY_ON,
          *, backoff: float = DEFAULT_BACKOFF, max_backoff: float = DEFAULT_MAX_BACKOFF,
          per_try_timeout: float | None = None, budget: RetryBudget | None = None,
          policy: Retry | None = None, sleep: Sleep | None = None,
          clock: Clock | None = None) -> Callable[[_F], _F]:
    """Retry a sync or async function on ``on`` (gRPC codes or exception types),
    ``attempts`` in all — or under a shared ``policy`` (the other policy arguments
    are then ignored). See the module docstring for what a failed call raises.

    ``sleep`` defaults to ``time.sleep`` / ``asyncio.sleep``; an async function may
    be given a plain callable too. ``clock`` is the monotonic clock deadlines are
    measured on. The policy is available as ``fn.retry_policy``.

    Example::

        @retry(attempts=3, on=[grpc.StatusCode.UNAVAILABLE], per_try_timeout=0.5)
        async def get_reviews(request): ...
    """
    chosen = policy if policy is not None else Retry(
        attempts=attempts, on=tuple(on), backoff=backoff, max_backoff=max_backoff,
        per_try_timeout=per_try_timeout, budget=budget)

    def decorate(fn: _F) -> _F:
        name = callable_name(fn)
        if inspect.iscoroutinefunction(fn):
            asleep = async_sleep(sleep)

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                return await acall_with_retry(chosen, fn, args, kwargs, sleep=asleep,
                                              clock=clock, name=name)
            awrapper.retry_policy = chosen  # type: ignore[attr-defined]
            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return call_with_retry(chosen, fn, args, kwargs, sleep=sleep, clock=clock,
                                   name=name)
        wrapper.retry_policy = chosen  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
