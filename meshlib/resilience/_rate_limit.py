"""``RateLimit``: a token bucket — ``rate`` tokens per second, at most ``burst`` saved.

Example::

    limiter = RateLimit(100, burst=20)
    wait = limiter.try_acquire()    # 0.0: go; else seconds until a token is due
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimit"]


class RateLimit:
    """A thread-safe token bucket; share one object to share the limit."""

    def __init__(self, rate: float, burst: int | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 per second, got {rate}")
        self.rate = rate
        self.burst = burst if burst is not None else max(1, math.ceil(rate))
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self._clock = clock
        self._tokens = float(self.burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def try_acquire(self) -> float:
        """Take a token: 0.0 if one was there, else the seconds until one is due."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate

    def __repr__(self) -> str:
        return f"RateLimit({self.rate:g}/s, burst={self.burst})"
