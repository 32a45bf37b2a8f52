"""A clock that only moves when told to, and a sleep that moves it instead of waiting."""

from __future__ import annotations

import threading

__all__ = ["FakeClock"]


class FakeClock:
    """A monotonic clock for :class:`~meshlib.MeshSettings` ``clock=`` and the
    resilience decorators: time moves only by :meth:`advance` and :meth:`sleep`, so a
    test of timeouts, backoff or breaker reset never waits.

    Example::

        clock = FakeClock()
        breaker = meshlib.circuit_breaker(failures=1, reset_timeout=30, clock=clock)
        ...
        clock.advance(30)            # the breaker half-opens, no real wait

    ``sleeps`` records every :meth:`sleep` asked for (a retry's backoffs, say).
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        with self._lock:
            self.now += seconds

    def sleep(self, seconds: float) -> None:
        """Record the sleep and advance the clock by it, at once."""
        with self._lock:
            self.sleeps.append(seconds)
            self.now += max(0.0, seconds)

    async def async_sleep(self, seconds: float) -> None:
        """:meth:`sleep` for ``async`` code: advances at once, then lets other tasks
        run (as a real sleep would)."""
        import asyncio

        self.sleep(seconds)
        await asyncio.sleep(0)
