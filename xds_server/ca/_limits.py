"""How fast one identity may get certificates: a token bucket per SPIFFE ID.

A workload renews at half its certificate's lifetime, so even a replica set restarting
at once asks a handful of times a minute; a stolen token used to mint certificates in a
loop asks thousands of times. The certificate service takes one token per issued
certificate from the identity's bucket and answers ``RESOURCE_EXHAUSTED`` when it is
empty.

Example::

    buckets = IssueBuckets(IssueLimit(burst=10, per_second=1.0))
    wait = buckets.take("spiffe://cluster.local/ns/default/sa/frontend")  # 0.0: go
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_ISSUE_BURST", "DEFAULT_ISSUE_RATE", "IssueBuckets", "IssueLimit"]

DEFAULT_ISSUE_BURST = 10  # certificates one identity may get at once
DEFAULT_ISSUE_RATE = 1.0  # then this many per second
_MAX_BUCKETS = 10_000  # full buckets are dropped past this; they hold no state


@dataclass(frozen=True, slots=True, kw_only=True)
class IssueLimit:
    """A token bucket's size (``burst``) and refill rate (``per_second``)."""

    burst: int = DEFAULT_ISSUE_BURST
    per_second: float = DEFAULT_ISSUE_RATE

    def __post_init__(self) -> None:
        if self.burst < 1 or not self.per_second > 0:
            raise ValueError(f"an issue limit needs burst >= 1 and per_second > 0: {self}")


class IssueBuckets:
    """One token bucket per key; :meth:`take` says how long to wait (0.0: allowed)."""

    def __init__(self, limit: IssueLimit, *, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.limit = limit
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0, or the seconds until one is available."""
        now = self._clock()
        tokens = self._level(key, now)
        if tokens < 1.0:
            return (1.0 - tokens) / self.limit.per_second
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > _MAX_BUCKETS:
            self._prune(now)
        return 0.0

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.limit.burst), now))
        return min(float(self.limit.burst), tokens + (now - at) * self.limit.per_second)

    def _prune(self, now: float) -> None:
        full = [k for k in self._buckets if self._level(k, now) >= self.limit.burst]
        for key in full:
            del self._buckets[key]
        while len(self._buckets) > _MAX_BUCKETS:  # all busy: forget the oldest
            del self._buckets[next(iter(self._buckets))]
