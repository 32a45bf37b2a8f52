"""A fake monotonic clock and a recording sleep, so no resilience test really waits."""

from __future__ import annotations

import pytest


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSleep(list[float]):
    """Records each sleep asked for and advances the clock by it."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        self.clock.advance(seconds)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_sleep(fake_clock: FakeClock) -> FakeSleep:
    return FakeSleep(fake_clock)
