"""meshlib's one retry engine (:class:`RetryRun`, on tenacity), the ``Retry`` policy
and the ``@retry`` decorator.

:class:`RetryRun` decides, failure after failure, whether and how long to wait before
the next attempt: at most ``attempts`` in all, waiting a random time in
``[0, backoff × 2^n]`` capped at ``max_backoff`` (full jitter, tenacity's
``wait_random_exponential``), only on what the policy calls retryable, never past the
deadline, and only while the optional :class:`RetryBudget` allows. It does no I/O:
the decorators here, ``interceptors``' retry interceptors and the mesh channels and
HTTP transports (their policy comes from the control plane) each drive it, sync or
asyncio, with an injected ``sleep`` and ``clock``. The first attempt runs before any
tenacity object is built, so a call that succeeds pays for no retry machinery.

While a retrying call runs, :data:`RETRIES_OWNED` is true: mesh channels called
inside make one attempt per call and leave retrying to it, so a local policy and the
control plane's never multiply.

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

import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
import tenacity

from meshlib.errors import CircuitOpenError, RetryExhaustedError
from meshlib.resilience._budget import RetryBudget
from meshlib.resilience._clock import Clock, Sleep, async_sleep, callable_name
from meshlib.resilience._deadline import (
    current_deadline,
    earliest,
    reset_deadline,
    run_within,
    set_deadline,
)

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_RETRY_ATTEMPTS",
    "DEFAULT_RETRY_ON",
    "RETRIES_OWNED",
    "BudgetStop",
    "Condition",
    "DeadlineStop",
    "Retry",
    "RetryRules",
    "RetryRun",
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

RETRIES_OWNED: ContextVar[bool] = ContextVar("meshlib_retries_owned", default=False)
"""True while a :func:`retry` decorator (or a retry interceptor) drives attempts: mesh
channels called inside make one attempt per call and leave retrying to it, so a
local policy and the control plane's never multiply (3 local × 3 mesh attempts would
be 9 calls to a struggling service)."""


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


class RetryRules(Protocol):
    """What the retry engine needs of a policy: :class:`Retry`, or a route's retry
    policy from the control plane (``meshlib._route_table.RouteRetry``)."""

    attempts: int  # in all, the first one included
    backoff: float  # full-jitter base: a wait is random in [0, backoff × 2^n]
    max_backoff: float

    def retryable(self, error: BaseException) -> bool:
        """Whether ``error`` is worth another attempt."""
        ...


class RetryRun:
    """One call's retries: the sans-IO engine every retrying driver steps through.

    After each failed attempt, :meth:`next_wait` says how long to wait before the next
    one, or None when the call ends with that failure — tenacity decides, with the
    rules' attempts, full-jitter backoff and retryable test, the deadline (no wait
    ends at or past it) and the retry budget (asked last: it spends a token). The
    drivers — the decorators, the retry interceptors, the mesh channels and HTTP
    transports, sync or asyncio — only make attempts and sleep. Nothing of tenacity
    is built until a first retryable failure, so a call that succeeds pays for none
    of it.

    Example::

        run = RetryRun(policy, name="charge")
        while True:
            try:
                return charge(request)
            except grpc.RpcError as err:
                wait = run.next_wait(err)
                if wait is None:
                    run.give_up(err)        # RetryExhaustedError, or err itself
            time.sleep(wait)
    """

    __slots__ = ("_retrying", "_state", "attempts", "budget", "clock", "deadline", "name",
                 "rules")

    def __init__(self, rules: RetryRules, *, name: str = "", deadline: float | None = None,
                 clock: Clock = time.monotonic, budget: RetryBudget | None = None) -> None:
        self.rules = rules
        self.name = name
        self.deadline = deadline
        self.clock = clock
        self.budget = budget
        self.attempts = 0  # failed attempts so far
        self._retrying: tenacity.Retrying | None = None
        self._state: tenacity.RetryCallState | None = None

    def next_wait(self, error: BaseException) -> float | None:
        """An attempt failed with ``error``: seconds to wait before the next attempt,
        or None when there is none (not retryable, out of attempts, past the deadline,
        or the budget refused)."""
        self.attempts += 1
        if self.rules.attempts <= 1 or not self.rules.retryable(error):
            return None
        state = self._state
        if state is None:
            self._retrying = retrying = tenacity.Retrying(**self._tenacity_kwargs())
            retrying.begin()
            state = self._state = tenacity.RetryCallState(retrying, fn=None, args=(),
                                                          kwargs={})
        else:
            state.prepare_for_next_attempt()
        state.set_exception((type(error), error, error.__traceback__))
        try:
            action = self._retrying.iter(state)  # type: ignore[union-attr]
        except tenacity.RetryError:
            return None  # a stop rule: attempts, deadline or budget
        except BaseException as raised:
            if raised is error:
                return None  # tenacity's retry test said no
            raise
        return float(action) if isinstance(action, tenacity.DoSleep) else None

    def _tenacity_kwargs(self) -> dict[str, Any]:
        rules = self.rules
        stops: list[tenacity.stop.stop_base] = [tenacity.stop_after_attempt(rules.attempts)]
        if self.deadline is not None:
            stops.append(DeadlineStop(self.deadline, self.clock))
        if self.budget is not None:
            stops.append(BudgetStop(self.budget))  # last: it spends a token
        return {
            "stop": tenacity.stop_any(*stops),
            "wait": tenacity.wait_random_exponential(multiplier=rules.backoff,
                                                     max=rules.max_backoff),
            "retry": tenacity.retry_if_exception(rules.retryable),
        }

    def final(self, error: BaseException) -> BaseException:
        """What the call raises once it ends with ``error``: a
        :class:`~meshlib.RetryExhaustedError` (a ``grpc.RpcError`` with the last
        attempt's code) when every allowed attempt was made and failed retryably;
        otherwise — not retryable, or cut short by the budget or the deadline — the
        error itself."""
        rules = self.rules
        if self.attempts < rules.attempts or self.attempts <= 1 or not rules.retryable(error):
            return error
        code = error.code() if isinstance(error, grpc.RpcError) and hasattr(
            error, "code") else None
        last = code.name if isinstance(code, grpc.StatusCode) else type(error).__name__
        return RetryExhaustedError(
            f"{self.name}: {self.attempts} attempts failed, the last with {last}: {error}",
            attempts=self.attempts, last_error=error, service=self.name)

    def give_up(self, error: BaseException) -> NoReturn:
        """Raise what the call raises when it ends with ``error`` (:meth:`final`)."""
        final = self.final(error)
        if final is error:
            raise error
        raise final from error


def _attempt(fn: Callable[..., _T], args: tuple[Any, ...], kwargs: dict[str, Any],
             per_try: float | None, clock: Clock) -> _T:
    if per_try is None:
        return fn(*args, **kwargs)
    token = set_deadline(clock() + per_try)
    try:
        return fn(*args, **kwargs)
    finally:
        reset_deadline(token)


def _begin(policy: Retry, fn: Callable[..., Any], clock: Clock | None,
           deadline: float | None, name: str) -> RetryRun:
    if policy.budget is not None:
        policy.budget.record_request()
    return RetryRun(policy, name=name or callable_name(fn), clock=clock or time.monotonic,
                    deadline=earliest(current_deadline(), deadline), budget=policy.budget)


def call_with_retry(policy: Retry, fn: Callable[..., _T], args: tuple[Any, ...] = (),
                    kwargs: dict[str, Any] | None = None, *, sleep: Sleep | None = None,
                    clock: Clock | None = None, deadline: float | None = None,
                    name: str = "") -> _T:
    """Run ``fn(*args, **kwargs)`` under ``policy`` — what ``@retry`` and
    ``interceptors.RetryClientInterceptor`` do. No attempt starts after ``deadline``
    or the deadline in force, whichever is sooner."""
    kwargs = kwargs or {}
    run = _begin(policy, fn, clock, deadline, name)
    wait = time.sleep if sleep is None else sleep
    token = RETRIES_OWNED.set(True)
    try:
        while True:
            try:
                return _attempt(fn, args, kwargs, policy.per_try_timeout, run.clock)
            except Exception as err:
                seconds = run.next_wait(err)
                if seconds is None:
                    run.give_up(err)
            wait(seconds)
    finally:
        RETRIES_OWNED.reset(token)


async def acall_with_retry(policy: Retry, fn: Callable[..., Awaitable[_T]],
                           args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
                           *, sleep: Sleep | None = None, clock: Clock | None = None,
                           deadline: float | None = None, name: str = "") -> _T:
    """:func:`call_with_retry` for coroutine functions. ``sleep`` may be a coroutine
    function or a plain callable (default ``asyncio.sleep``)."""
    kwargs = kwargs or {}
    run = _begin(policy, fn, clock, deadline, name)
    wait = async_sleep(sleep)
    per_try = policy.per_try_timeout
    token = RETRIES_OWNED.set(True)
    try:
        while True:
            try:
                if per_try is None:
                    return await fn(*args, **kwargs)
                return await run_within(lambda: fn(*args, **kwargs), per_try, run.clock(),
                                        what=f"{run.name}: attempt {run.attempts + 1}",
                                        service=run.name)
            except Exception as err:
                seconds = run.next_wait(err)
                if seconds is None:
                    run.give_up(err)
            await wait(seconds)
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
