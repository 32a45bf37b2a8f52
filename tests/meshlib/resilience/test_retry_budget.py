"""RetryBudget's sliding window on a fake clock."""

from __future__ import annotations

import threading

import pytest

from meshlib import RetryBudget
from meshlib.resilience import DEFAULT_MIN_RETRIES_PER_SECOND, DEFAULT_RETRY_BUDGET_PERCENT


def spend_all(budget: RetryBudget) -> int:
    n = 0
    while budget.try_spend() and n < 100_000:
        n += 1
    return n


def test_defaults():
    budget = RetryBudget()
    assert (budget.percent, budget.min_retries_per_second, budget.window) == (
        DEFAULT_RETRY_BUDGET_PERCENT, DEFAULT_MIN_RETRIES_PER_SECOND, 10.0) == (20.0, 10.0, 10.0)
    assert "20%" in repr(budget)


def test_percent_of_requests_plus_a_floor(fake_clock):
    budget = RetryBudget(percent=20, min_retries_per_second=1, window=10, clock=fake_clock)
    for _ in range(1000):
        budget.record_request()
    assert spend_all(budget) == 200 + 10  # 20 % of 1,000 + 1/s × 10 s


def test_old_requests_and_retries_slide_out_of_the_window(fake_clock):
    budget = RetryBudget(percent=50, min_retries_per_second=0, window=10, clock=fake_clock)
    for _ in range(100):
        budget.record_request()
    assert spend_all(budget) == 50
    fake_clock.advance(5)
    for _ in range(100):
        budget.record_request()
    assert spend_all(budget) == 50  # 200 requests in the window allow 100 retries
    fake_clock.advance(6)  # the first 100 requests and 50 retries have left the window
    assert spend_all(budget) == 0
    fake_clock.advance(11)
    assert not budget.try_spend()
    for _ in range(10):
        budget.record_request()
    assert spend_all(budget) == 5


def test_floor_alone(fake_clock):
    budget = RetryBudget(percent=0, min_retries_per_second=2, window=5, clock=fake_clock)
    assert spend_all(budget) == 10


def test_record_request_is_lock_free_and_safe_from_threads(fake_clock):
    budget = RetryBudget(percent=100, min_retries_per_second=0, window=10, clock=fake_clock)

    def work() -> None:
        for _ in range(10_000):
            budget.record_request()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # a racing += may lose an increment: the budget can only be a little stricter
    assert 39_000 <= spend_all(budget) <= 40_000


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        RetryBudget(percent=-1)
    with pytest.raises(ValueError):
        RetryBudget(window=0)
    with pytest.raises(ValueError):
        RetryBudget(min_retries_per_second=-1)
