"""Jittered exponential backoff between ADS stream attempts (like gRPC's connection
backoff, https://github.com/grpc/grpc/blob/master/doc/connection-backoff.md).

A one-method strategy in the spirit of tenacity's ``wait_*`` objects (tenacity is not
a dependency of meshlib): ``backoff(attempt) -> seconds``, all randomness injected so
tests never depend on luck.

Example::

    backoff = Backoff(random=lambda: 0.5)   # no jitter
    [backoff(n) for n in range(4)]          # [0.1, 0.2, 0.4, 0.8]
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_BACKOFF_BASE",
    "DEFAULT_BACKOFF_CAP",
    "DEFAULT_BACKOFF_JITTER",
    "DEFAULT_BACKOFF_MULTIPLIER",
    "Backoff",
]

DEFAULT_BACKOFF_BASE = 0.1
DEFAULT_BACKOFF_CAP = 30.0
DEFAULT_BACKOFF_MULTIPLIER = 2.0
DEFAULT_BACKOFF_JITTER = 0.2


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """``min(cap, base * multiplier ** attempt)``, spread by ``± jitter`` of itself and
    never above ``cap``; ``random`` returns a float in [0, 1) (0.5 means no jitter)."""

    base: float = DEFAULT_BACKOFF_BASE
    cap: float = DEFAULT_BACKOFF_CAP
    multiplier: float = DEFAULT_BACKOFF_MULTIPLIER
    jitter: float = DEFAULT_BACKOFF_JITTER
    random: Callable[[], float] = field(default=_random.random, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError(f"backoff needs 0 < base <= cap, got {self.base}, {self.cap}")
        if self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError("backoff needs multiplier >= 1 and 0 <= jitter < 1")

    def __call__(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 0)."""
        try:
            raw = min(self.cap, self.base * self.multiplier ** attempt)
        except OverflowError:
            raw = self.cap
        spread = 1 + self.jitter * (2 * self.random() - 1)
        return min(self.cap, raw * spread)
