"""The decorators stacked in any order, sharing policy objects, sync and async."""

from __future__ import annotations

import grpc
import pytest

import meshlib
from meshlib import (
    CircuitBreaker,
    CircuitOpenError,
    DeadlineExceededError,
    RateLimit,
    RateLimitedError,
    RetryExhaustedError,
)
from meshlib.errors import CallError
from meshlib.resilience import RETRIES_OWNED

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def test_retry_around_a_breaker_counts_each_attempt_and_stops_at_the_open_circuit(
        fake_clock, fake_sleep):
    breaker = CircuitBreaker(failures=2, reset_timeout=10, clock=fake_clock)
    calls = 0

    @meshlib.retry(attempts=5, sleep=fake_sleep)
    @meshlib.circuit_breaker(breaker=breaker)
    def get() -> None:
        nonlocal calls
        calls += 1
        raise CallError("down", code=UNAVAILABLE)

    with pytest.raises(CircuitOpenError):
        get()  # two failures trip the breaker; the open circuit is not retried
    assert calls == 2 and len(fake_sleep) == 2
    with pytest.raises(CircuitOpenError):
        get()
    assert calls == 2


def test_breaker_around_retry_counts_one_failure_per_exhausted_call(fake_clock, fake_sleep):
    @meshlib.circuit_breaker(failures=2, clock=fake_clock)
    @meshlib.retry(attempts=3, sleep=fake_sleep)
    def get() -> None:
        raise CallError("down", code=UNAVAILABLE)

    with pytest.raises(RetryExhaustedError):
        get()
    assert get.circuit_breaker.consecutive_failures == 1  # RetryExhaustedError: UNAVAILABLE
    with pytest.raises(RetryExhaustedError):
        get()
    with pytest.raises(CircuitOpenError):
        get()


def test_timeout_inside_retry_gives_each_attempt_its_own_deadline(fake_clock, fake_sleep):
    seen = []

    @meshlib.retry(attempts=3, sleep=fake_sleep)
    @meshlib.timeout(1.0, clock=fake_clock)
    def get() -> None:
        seen.append((meshlib.current_deadline(), RETRIES_OWNED.get()))
        raise CallError("down", code=UNAVAILABLE)

    with pytest.raises(RetryExhaustedError):
        get()
    assert [owned for _, owned in seen] == [True] * 3
    assert [d for d, _ in seen] == [pytest.approx(1001.0 + sum(fake_sleep[:i]))
                                    for i in range(3)]


def test_a_rate_limit_refusal_is_not_retried_by_default(fake_clock, fake_sleep):
    limiter = RateLimit(1, burst=1, clock=fake_clock)

    @meshlib.retry(attempts=3, sleep=fake_sleep)
    @meshlib.rate_limit(1, limiter=limiter)
    def get() -> str:
        return "ok"

    assert get() == "ok"
    with pytest.raises(RateLimitedError):
        get()
    assert fake_sleep == []


def test_every_decorator_error_is_an_rpc_error_with_its_code(fake_clock, fake_sleep):
    def down() -> None:
        raise CallError("down", code=UNAVAILABLE)

    def raised(fn) -> grpc.RpcError:  # type: ignore[no-untyped-def]
        with pytest.raises(grpc.RpcError) as info:
            fn()
        return info.value

    breaker = CircuitBreaker(failures=1, clock=fake_clock)
    breaker.record(ValueError())
    limited = meshlib.rate_limit(1, clock=fake_clock)(lambda: None)
    limited()
    late = meshlib.timeout(1, clock=fake_clock)(lambda: None)
    with meshlib.deadline_scope(1, now=fake_clock() - 2):
        expired = raised(late)
    errors = {
        CircuitOpenError: raised(meshlib.circuit_breaker(breaker=breaker)(down)),
        DeadlineExceededError: expired,
        RateLimitedError: raised(limited),
        RetryExhaustedError: raised(meshlib.retry(sleep=fake_sleep)(down)),
    }
    codes = {CircuitOpenError: UNAVAILABLE,
             DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
             RateLimitedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
             RetryExhaustedError: UNAVAILABLE}
    for error_type, error in errors.items():
        assert type(error) is error_type and error.code() == codes[error_type]


async def test_async_stack_in_any_order(fake_clock):
    slept: list[float] = []

    async def asleep(seconds: float) -> None:
        slept.append(seconds)

    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls % 3:
            raise CallError("down", code=UNAVAILABLE)
        return "ok"

    one = meshlib.retry(attempts=3, sleep=asleep)(meshlib.circuit_breaker(
        failures=10, clock=fake_clock)(meshlib.timeout(5.0)(flaky)))
    two = meshlib.timeout(5.0)(meshlib.circuit_breaker(failures=10, clock=fake_clock)(
        meshlib.retry(attempts=3, sleep=asleep)(flaky)))
    assert await one() == "ok" and await two() == "ok"
    assert calls == 6 and len(slept) == 4
    assert one.__name__ == two.__name__ == "flaky"
