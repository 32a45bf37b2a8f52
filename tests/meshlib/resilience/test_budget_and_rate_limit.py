"""RetryBudget's sliding window and RateLimit's token bucket, on a fake clock."""

from __future__ import annotations

import pytest

from meshlib import RateLimit, RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def spend_all(budget: RetryBudget) -> int:
    n = 0
    while budget.try_spend() and n < 100_000:
        n += 1
    return n


def test_budget_is_percent_of_requests_plus_a_floor():
    clock = Clock()
    budget = RetryBudget(percent=20, min_retries_per_second=1, window=10, clock=clock)
    for _ in range(1000):
        budget.record_request()
    assert spend_all(budget) == 200 + 10  # 20 % of 1,000 + 1/s × 10 s


def test_budget_forgets_old_requests_and_retries():
    clock = Clock()
    budget = RetryBudget(percent=50, min_retries_per_second=0, window=10, clock=clock)
    for _ in range(100):
        budget.record_request()
    assert spend_all(budget) == 50
    clock.now += 11  # the window has passed: requests and retries forgotten
    assert not budget.try_spend()
    for _ in range(10):
        budget.record_request()
    assert spend_all(budget) == 5


def test_budget_floor_alone():
    budget = RetryBudget(percent=0, min_retries_per_second=2, window=5, clock=Clock())
    assert spend_all(budget) == 10


def test_rate_limit_bursts_then_refills():
    clock = Clock()
    limiter = RateLimit(10, burst=3, clock=clock)
    assert [limiter.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.try_acquire()
    assert wait == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.try_acquire() == 0.0
    clock.now += 100
    assert sum(limiter.try_acquire() == 0.0 for _ in range(10)) == 3  # capped at burst


def test_rate_limit_rejects_nonsense():
    with pytest.raises(ValueError):
        RateLimit(0)
    with pytest.raises(ValueError):
        RetryBudget(percent=-1)
