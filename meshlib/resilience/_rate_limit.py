"""``RateLimit`` — a token bucket, ``rate`` tokens per second, at most ``burst`` saved —
and the ``@rate_limit`` decorator.

Example::

    limiter = RateLimit(100, burst=20)
    wait = limiter.try_acquire()    # 0.0: go; else seconds until a token is due
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from meshlib.errors import RateLimitedError
from meshlib.resilience._clock import Clock, Sleep, async_sleep, callable_name
from meshlib.resilience._deadline import current_deadline

__all__ = ["RateLimit", "rate_limit"]

_F = TypeVar("_F", bound=Callable[..., Any])
_MAX_WAITS = 1000  # a waiting caller that keeps losing the race gives up eventually


class RateLimit:
    """A thread-safe token bucket: ``rate`` tokens a second, at most ``burst`` saved
    (default: ``ceil(rate)``, at least 1). Share one object to share the limit.

    Example::

        limiter = RateLimit(10, burst=3)
        if (wait := limiter.try_acquire()):
            raise RateLimitedError("busy", retry_after=wait)
    """

    def __init__(self, rate: float, burst: int | None = None, *,
                 clock: Clock = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 per second, got {rate}")
        if burst is not None and burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate = float(rate)
        self.burst = burst if burst is not None else max(1, math.ceil(rate))
        self.clock = clock
        self._tokens = float(self.burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def try_acquire(self) -> float:
        """Take a token: 0.0 if one was there, else the seconds until one is due
        (nothing is taken then)."""
        with self._lock:
            now = self.clock()
            tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if tokens >= 1:
                self._tokens = tokens - 1
                return 0.0
            self._tokens = tokens
            return (1 - tokens) / self.rate

    def __repr__(self) -> str:
        return f"RateLimit({self.rate:g}/s, burst={self.burst})"


def rate_limit(rate: float, burst: int | None = None, *, limiter: RateLimit | None = None,
               wait: bool = False, sleep: Sleep | None = None,
               clock: Clock | None = None) -> Callable[[_F], _F]:
    """At most ``rate`` calls a second (bursts of ``burst``) to a sync or async
    function; with a shared ``limiter``, that limiter (``rate``/``burst``/``clock``
    are then ignored). Each decorated function otherwise gets its own bucket.

    Over the limit it raises :class:`~meshlib.RateLimitedError` (RESOURCE_EXHAUSTED,
    with ``retry_after``), or with ``wait=True`` sleeps until a token is due — but
    never past the deadline in force: a wait that would end after it raises at once.

    Example::

        @rate_limit(100, burst=20)
        async def notify(user): ...
    """

    def decorate(fn: _F) -> _F:
        name = callable_name(fn)
        chosen = limiter if limiter is not None else RateLimit(
            rate, burst, clock=time.monotonic if clock is None else clock)
        now = chosen.clock

        def refused(delay: float) -> RateLimitedError:
            return RateLimitedError(f"{name}: over {chosen.rate:g} calls/s; a token is due "
                                    f"in {delay:.3f}s", retry_after=delay, service=name)

        def must_refuse(delay: float) -> bool:
            if not wait:
                return True
            deadline = current_deadline()
            return deadline is not None and now() + delay > deadline

        if inspect.iscoroutinefunction(fn):
            asleep = async_sleep(sleep)

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                for _ in range(_MAX_WAITS):
                    delay = chosen.try_acquire()
                    if not delay:
                        return await fn(*args, **kwargs)
                    if must_refuse(delay):
                        raise refused(delay)
                    await asleep(delay)
                raise refused(delay)
            awrapper.rate_limit = chosen  # type: ignore[attr-defined]
            return awrapper  # type: ignore[return-value]

        ssleep = time.sleep if sleep is None else sleep

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for _ in range(_MAX_WAITS):
                delay = chosen.try_acquire()
                if not delay:
                    return fn(*args, **kwargs)
                if must_refuse(delay):
                    raise refused(delay)
                ssleep(delay)
            raise refused(delay)
        wrapper.rate_limit = chosen  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
