"""Lock-free tallies: nothing lost under threads, folded in batches and at reads."""

from __future__ import annotations

import threading

from meshlib.telemetry._tally import FOLD_AT, Durations, Total

BOUNDS = (0.001, 0.01, 0.1)


def test_durations_fill_inclusive_buckets_and_sum():
    d = Durations(BOUNDS)
    for seconds in (0.0005, 0.001, 0.002, 0.05, 5.0):
        d.add(seconds)
    cumulative, total, retries = d.snapshot()
    assert cumulative == [2, 3, 4, 5]  # le=0.001 holds 0.001 itself; +Inf last
    assert abs(total - 5.0535) < 1e-9 and retries == 0


def test_pending_observations_are_folded_every_batch():
    d = Durations(BOUNDS)
    for _ in range(FOLD_AT):
        d.add(0.002)
    assert d.pending == [] and d.buckets[1] == FOLD_AT


def test_threads_lose_nothing():
    d, t = Durations(BOUNDS), Total()

    def work() -> None:
        for i in range(20_000):
            d.add(0.0001, retries=i % 2)
            t.add(3)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cumulative, _, retries = d.snapshot()
    assert cumulative[-1] == 160_000 and retries == 80_000
    assert t.value() == 480_000
