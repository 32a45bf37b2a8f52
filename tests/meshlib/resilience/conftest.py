"""The resilience tests' clock is meshlib.testing's (the ``fake_clock`` fixture of the
pytest plugin); ``fake_sleep`` is its recording sleep."""

from __future__ import annotations

import pytest

from meshlib.testing import FakeClock


class FakeSleep(list[float]):
    """Records each sleep asked for and advances the clock by it."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        self.clock.advance(seconds)


@pytest.fixture
def fake_sleep(fake_clock: FakeClock) -> FakeSleep:
    return FakeSleep(fake_clock)
