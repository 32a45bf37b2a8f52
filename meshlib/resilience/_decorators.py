"""The decorators: ``retry``, ``circuit_breaker``, ``timeout``, ``rate_limit``.

Each works on sync and async callables alike (async when the callable is a coroutine
function), keeps the wrapped function's name and docstring (``functools.wraps``), and
composes with the others in any order. Policy objects (:class:`Retry`,
:class:`CircuitBreaker`, :class:`RateLimit`, :class:`RetryBudget`) can be passed in
and shared, sharing their state. ``clock`` and ``sleep`` are injectable, so tests never
really sleep.

Example::

    breaker = meshlib.CircuitBreaker(failures=5, reset_timeout=30)

    @meshlib.retry(attempts=3, on=[grpc.StatusCode.UNAVAILABLE])
    @meshlib.circuit_breaker(breaker=breaker)
    @meshlib.timeout(2.0)
    async def get_reviews(request): ...
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc

from meshlib._deadline import _DEADLINE, deadline_scope
from meshlib.errors import DeadlineExceededError, RateLimitedError
from meshlib.resilience._breaker import CircuitBreaker
from meshlib.resilience._budget import RetryBudget
from meshlib.resilience._rate_limit import RateLimit
from meshlib.resilience._retry import Condition, Retry, acall_with_retry, call_with_retry

__all__ = ["circuit_breaker", "rate_limit", "retry", "timeout"]

_F = TypeVar("_F", bound=Callable[..., Any])
_MAX_RATE_WAITS = 1000  # bounded: a waiting rate_limit gives up after this many sleeps


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))


def retry(attempts: int = 3, on: Iterable[Condition] = (grpc.StatusCode.UNAVAILABLE,), *,
          backoff: float = 0.025, max_backoff: float = 1.0,
          per_try_timeout: float | None = None, budget: RetryBudget | None = None,
          policy: Retry | None = None,
          sleep: Callable[[float], Any] | None = None) -> Callable[[_F], _F]:
    """Retry the function on ``on`` (gRPC codes or exception types), ``attempts`` in
    all; or under a shared ``policy``. When every attempt failed it raises
    :class:`~meshlib.RetryExhaustedError` (a ``grpc.RpcError`` with the last code);
    an error not worth retrying propagates unchanged. ``sleep`` is ``time.sleep`` /
    ``asyncio.sleep`` unless given (async functions need an async one)."""
    chosen = policy or Retry(attempts=attempts, on=tuple(on), backoff=backoff,
                             max_backoff=max_backoff, per_try_timeout=per_try_timeout,
                             budget=budget)

    def decorate(fn: _F) -> _F:
        name = _name(fn)
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                return await acall_with_retry(chosen, fn, args, kwargs, sleep=sleep,
                                              name=name)
            awrapper.retry_policy = chosen  # type: ignore[attr-defined]
            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return call_with_retry(chosen, fn, args, kwargs, sleep=sleep, name=name)
        wrapper.retry_policy = chosen  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def circuit_breaker(failures: int = 5, reset_timeout: float = 30.0,
                    half_open_probes: int = 1, *, breaker: CircuitBreaker | None = None,
                    clock: Callable[[], float] | None = None) -> Callable[[_F], _F]:
    """Guard the function with a circuit breaker (a new one, or the shared ``breaker``):
    after ``failures`` consecutive failures calls fail fast with
    :class:`~meshlib.CircuitOpenError` until ``reset_timeout`` has passed."""
    chosen = breaker or CircuitBreaker(failures, reset_timeout, half_open_probes,
                                       clock=clock or time.monotonic)

    def decorate(fn: _F) -> _F:
        if not chosen.name:
            chosen.name = _name(fn)
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                return await chosen.acall(fn, *args, **kwargs)
            awrapper.circuit_breaker = chosen  # type: ignore[attr-defined]
            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return chosen.call(fn, *args, **kwargs)
        wrapper.circuit_breaker = chosen  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def timeout(seconds: float, *, clock: Callable[[], float] | None = None
            ) -> Callable[[_F], _F]:
    """Give the function a deadline ``seconds`` from its start (or the caller's, if
    sooner). Every mesh call inside is capped by what is left (deadline propagation).

    An async function is cancelled at the deadline and raises
    :class:`~meshlib.DeadlineExceededError`. A sync function cannot be interrupted:
    it raises that error only if the deadline has already passed when it starts;
    inside, its mesh and gRPC calls through meshlib are capped.
    """
    if seconds <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {seconds}")
    now = clock or time.monotonic

    def expired(name: str) -> DeadlineExceededError:
        return DeadlineExceededError(f"{name}: deadline passed before the call", service=name)

    def decorate(fn: _F) -> _F:
        name = _name(fn)
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                start = now()
                with deadline_scope(seconds, now=start) as deadline:
                    left = seconds if deadline is None else deadline - start
                    if left <= 0:
                        raise expired(name)
                    try:
                        async with asyncio.timeout(left):
                            return await fn(*args, **kwargs)
                    except TimeoutError as err:
                        raise DeadlineExceededError(
                            f"{name}: no result within {left:.3f}s", service=name) from err
            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = now()
            outer = _DEADLINE.get()
            if outer is not None and outer <= start:
                raise expired(name)
            with deadline_scope(seconds, now=start):
                return fn(*args, **kwargs)
        return wrapper  # type: ignore[return-value]

    return decorate


def rate_limit(rate: float, burst: int | None = None, *, limiter: RateLimit | None = None,
               wait: bool = False, sleep: Callable[[float], Any] | None = None,
               clock: Callable[[], float] | None = None) -> Callable[[_F], _F]:
    """At most ``rate`` calls per second (bursts of ``burst``), per shared ``limiter``
    if given. Over the limit: :class:`~meshlib.RateLimitedError` with ``retry_after``,
    or with ``wait=True`` sleep until a token is due."""
    chosen = limiter or RateLimit(rate, burst, clock=clock or time.monotonic)

    def refused(name: str, delay: float) -> RateLimitedError:
        return RateLimitedError(f"{name}: over {chosen.rate:g} calls/s; retry in "
                                f"{delay:.3f}s", retry_after=delay, service=name)

    def decorate(fn: _F) -> _F:
        name = _name(fn)
        if inspect.iscoroutinefunction(fn):
            asleep: Callable[[float], Awaitable[Any]] = sleep or asyncio.sleep

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                for _ in range(_MAX_RATE_WAITS):
                    delay = chosen.try_acquire()
                    if not delay:
                        return await fn(*args, **kwargs)
                    if not wait:
                        raise refused(name, delay)
                    await asleep(delay)
                raise refused(name, chosen.try_acquire())
            return awrapper  # type: ignore[return-value]

        ssleep = sleep or time.sleep

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for _ in range(_MAX_RATE_WAITS):
                delay = chosen.try_acquire()
                if not delay:
                    return fn(*args, **kwargs)
                if not wait:
                    raise refused(name, delay)
                ssleep(delay)
            raise refused(name, chosen.try_acquire())
        return wrapper  # type: ignore[return-value]

    return decorate
