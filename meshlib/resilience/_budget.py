"""``RetryBudget``: retries may add at most ``percent`` % to the requests of the last
``window`` seconds, plus ``min_retries_per_second`` (Linkerd's and Finagle's budget),
so a struggling service sees at most ~1.2× its normal load, never 3× or 5×.

:meth:`RetryBudget.record_request` sits on every call, so it only bumps an integer: no
lock, no clock. Two threads racing on ``+= 1`` may lose an increment, which only makes
the budget a little stricter. Counted requests are put in the current slot of the
sliding window every 64 requests and on every :meth:`RetryBudget.try_spend` (under a
lock), so at most 63 requests can be credited to a later slot than their own: a
bounded error, far below the ``min_retries_per_second × window`` floor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from meshlib.contract import (
    DEFAULT_MIN_RETRIES_PER_SECOND,
    DEFAULT_RETRY_BUDGET_PERCENT,
    DEFAULT_RETRY_BUDGET_WINDOW,
)

__all__ = ["DEFAULT_MIN_RETRIES_PER_SECOND", "DEFAULT_RETRY_BUDGET_PERCENT",
           "DEFAULT_RETRY_BUDGET_WINDOW", "RetryBudget"]

_SLOTS = 10


class RetryBudget:
    """Retries allowed: ``percent`` % of the requests of the last ``window`` seconds,
    plus ``min_retries_per_second × window``. Share one object to share the budget.

    Example::

        budget = RetryBudget(percent=20, min_retries_per_second=10)
        budget.record_request()          # each original request (not retries)
        if budget.try_spend():           # each retry that wants to go
            retry()
    """

    def __init__(self, percent: float = DEFAULT_RETRY_BUDGET_PERCENT,
                 min_retries_per_second: float = DEFAULT_MIN_RETRIES_PER_SECOND, *,
                 window: float = DEFAULT_RETRY_BUDGET_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 <= percent <= 1000:
            raise ValueError(f"percent must be in [0, 1000], got {percent}")
        if min_retries_per_second < 0 or window <= 0:
            raise ValueError("min_retries_per_second must be >= 0 and window > 0")
        self.percent = percent
        self.min_retries_per_second = min_retries_per_second
        self.window = window
        self._clock = clock
        self._slot_length = window / _SLOTS
        self._requests = [0] * _SLOTS
        self._retries = [0] * _SLOTS
        self._slot = int(clock() / self._slot_length)
        self._count = 0  # requests recorded, ever
        self._counted = 0  # of those, already put in a slot
        self._lock = threading.Lock()

    def record_request(self) -> None:
        """One original request (not a retry). Lock-free: see the module docstring."""
        count = self._count + 1
        self._count = count
        if not count & 63:
            self._advance()

    def try_spend(self) -> bool:
        """Whether one more retry may go now; if so it is counted."""
        with self._lock:
            self._advance_locked()
            allowed = (sum(self._requests) * self.percent / 100
                       + self.min_retries_per_second * self.window)
            if sum(self._retries) + 1 > allowed:
                return False
            self._retries[self._slot % _SLOTS] += 1
            return True

    def _advance(self) -> None:
        with self._lock:
            self._advance_locked()

    def _advance_locked(self) -> None:
        slot = int(self._clock() / self._slot_length)
        if slot != self._slot:
            for stale in range(self._slot + 1, min(slot, self._slot + _SLOTS) + 1):
                self._requests[stale % _SLOTS] = 0
                self._retries[stale % _SLOTS] = 0
            self._slot = slot
        count = self._count
        self._requests[slot % _SLOTS] += count - self._counted
        self._counted = count

    def __repr__(self) -> str:
        return (f"RetryBudget({self.percent:g}% + {self.min_retries_per_second:g}/s over "
                f"{self.window:g}s)")
