"""RateLimit's token bucket and the rate_limit decorator, on a fake clock and sleep."""

from __future__ import annotations

import grpc
import pytest

import meshlib
from meshlib import RateLimit, RateLimitedError


def test_bursts_then_refills(fake_clock):
    limiter = RateLimit(4, burst=3, clock=fake_clock)
    assert [limiter.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.try_acquire() == 0.25
    fake_clock.advance(0.125)
    assert limiter.try_acquire() == 0.125  # refusals take nothing
    fake_clock.advance(0.125)
    assert limiter.try_acquire() == 0.0
    fake_clock.advance(100)
    assert sum(limiter.try_acquire() == 0.0 for _ in range(10)) == 3  # capped at burst


def test_default_burst_is_one_seconds_worth(fake_clock):
    assert RateLimit(5, clock=fake_clock).burst == 5
    assert RateLimit(0.5, clock=fake_clock).burst == 1
    assert "burst=5" in repr(RateLimit(5))


def test_decorator_refuses_with_retry_after(fake_clock):
    fn = meshlib.rate_limit(2, burst=1, clock=fake_clock)(lambda: "ok")
    assert fn() == "ok"
    with pytest.raises(RateLimitedError) as info:
        fn()
    assert info.value.retry_after == pytest.approx(0.5)
    assert isinstance(info.value, grpc.RpcError)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_decorator_waits_with_the_injected_sleep(fake_clock, fake_sleep):
    fn = meshlib.rate_limit(2, burst=1, wait=True, sleep=fake_sleep, clock=fake_clock)(
        lambda: "ok")
    assert [fn(), fn(), fn()] == ["ok"] * 3
    assert fake_sleep == [pytest.approx(0.5)] * 2


def test_a_wait_never_runs_past_the_deadline(fake_clock, fake_sleep):
    fn = meshlib.rate_limit(1, burst=1, wait=True, sleep=fake_sleep, clock=fake_clock)(
        lambda: "ok")
    fn()
    with meshlib.deadline_scope(0.5, now=fake_clock()), pytest.raises(RateLimitedError):
        fn()  # a token is due in 1 s, the deadline in 0.5 s
    assert fake_sleep == []


async def test_async_decorator_refuses_or_waits(fake_clock, fake_sleep):
    limiter = RateLimit(4, burst=1, clock=fake_clock)

    @meshlib.rate_limit(4, limiter=limiter)
    async def refusing() -> str:
        return "ok"

    @meshlib.rate_limit(4, limiter=limiter, wait=True, sleep=fake_sleep)  # a plain sleep
    async def waiting() -> str:
        return "ok"

    assert await refusing() == "ok"
    with pytest.raises(RateLimitedError):
        await refusing()  # the shared bucket is empty
    assert await waiting() == "ok"
    assert fake_sleep == [pytest.approx(0.25)]
    assert refusing.rate_limit is waiting.rate_limit is limiter


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        RateLimit(0)
    with pytest.raises(ValueError):
        RateLimit(1, burst=0)
