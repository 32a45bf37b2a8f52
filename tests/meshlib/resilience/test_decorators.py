"""The decorators on sync and async functions, with injected clocks and sleeps: no
real sleeping."""

from __future__ import annotations

import asyncio

import grpc
import pytest

import meshlib
from meshlib import (
    CircuitBreaker,
    CircuitOpenError,
    DeadlineExceededError,
    RateLimit,
    RateLimitedError,
    Retry,
    RetryBudget,
    RetryExhaustedError,
)
from meshlib._call_context import RETRIES_OWNED
from meshlib.errors import CallError

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Flaky:
    """Fails ``failures`` times with ``code``, then answers."""

    def __init__(self, failures: int, code: grpc.StatusCode = UNAVAILABLE) -> None:
        self.failures = failures
        self.code = code
        self.calls = 0
        self.owned: list[bool] = []

    def __call__(self) -> str:
        self.calls += 1
        self.owned.append(RETRIES_OWNED.get())
        if self.calls <= self.failures:
            raise CallError("flaky", code=self.code)
        return "ok"


def test_retry_until_success_with_backoff_sleeps():
    sleeps: list[float] = []
    flaky = Flaky(2)
    fn = meshlib.retry(attempts=3, backoff=0.1, max_backoff=1.0, sleep=sleeps.append)(flaky)
    assert fn() == "ok"
    assert flaky.calls == 3 and len(sleeps) == 2
    assert all(0 <= s <= 1.0 for s in sleeps)
    assert flaky.owned == [True, True, True]  # mesh channels inside leave retries to us
    assert not RETRIES_OWNED.get()


def test_retry_exhausted_is_an_rpc_error_with_the_last_code():
    flaky = Flaky(10)
    fn = meshlib.retry(attempts=3, sleep=lambda s: None)(flaky)
    with pytest.raises(RetryExhaustedError) as info:
        fn()
    assert flaky.calls == 3
    assert isinstance(info.value, grpc.RpcError)
    assert info.value.code() == UNAVAILABLE and info.value.attempts == 3


def test_non_retryable_errors_propagate_unchanged():
    flaky = Flaky(1, code=grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(CallError) as info:
        meshlib.retry(sleep=lambda s: None)(flaky)()
    assert type(info.value) is CallError and flaky.calls == 1


def test_retry_on_exception_types_and_a_shared_policy_with_budget():
    budget = RetryBudget(percent=0, min_retries_per_second=0.2, window=10, clock=Clock())
    policy = Retry(attempts=5, on=(ConnectionError,), budget=budget)
    calls = []

    @meshlib.retry(policy=policy, sleep=lambda s: None)
    def a() -> None:
        calls.append("a")
        raise ConnectionError

    @meshlib.retry(policy=policy, sleep=lambda s: None)
    def b() -> None:
        calls.append("b")
        raise ConnectionError

    with pytest.raises(RetryExhaustedError):
        a()  # 1 + 2 retries: the budget holds 2 (0.2/s × 10 s)
    with pytest.raises(ConnectionError):
        b()  # the shared budget is spent: no retry
    assert calls == ["a", "a", "a", "b"]


def test_an_open_circuit_is_not_retried():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_timeout=10, clock=clock)
    flaky = Flaky(100)
    fn = meshlib.retry(attempts=5, sleep=lambda s: None)(
        meshlib.circuit_breaker(breaker=breaker)(flaky))
    with pytest.raises(CircuitOpenError):
        fn()
    assert flaky.calls == 1


def test_circuit_breaker_decorator_opens_and_half_opens_on_a_fake_clock():
    clock = Clock()
    flaky = Flaky(3)
    fn = meshlib.circuit_breaker(failures=3, reset_timeout=30, clock=clock)(flaky)
    for _ in range(3):
        with pytest.raises(CallError):
            fn()
    with pytest.raises(CircuitOpenError):
        fn()
    assert flaky.calls == 3
    clock.now += 30
    assert fn() == "ok"
    assert fn.circuit_breaker.state == "closed"


def test_rate_limit_refuses_or_waits():
    clock = Clock()
    limiter = RateLimit(2, burst=1, clock=clock)
    fn = meshlib.rate_limit(2, limiter=limiter)(lambda: "ok")
    assert fn() == "ok"
    with pytest.raises(RateLimitedError) as info:
        fn()
    assert info.value.retry_after == pytest.approx(0.5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    waiting = meshlib.rate_limit(2, limiter=limiter, wait=True, sleep=sleep)(lambda: "ok")
    assert waiting() == "ok" and slept == [pytest.approx(0.5)]


def test_timeout_sets_the_deadline_for_calls_inside():
    clock = Clock()
    seen = []

    @meshlib.timeout(2.0, clock=clock)
    def fn() -> None:
        seen.append(meshlib.current_deadline())

    fn()
    assert seen == [pytest.approx(102.0)]

    @meshlib.timeout(5.0, clock=clock)
    def outer() -> None:
        clock.now += 1
        fn()  # nested: only ever shortens

    outer()
    assert seen[-1] == pytest.approx(103.0)


def test_sync_timeout_fails_fast_when_the_deadline_already_passed():
    clock = Clock()
    inner = meshlib.timeout(1.0, clock=clock)(lambda: "ran")
    with meshlib.deadline_scope(1.0, now=clock.now - 5), pytest.raises(DeadlineExceededError):
        inner()


async def test_async_decorators_compose():
    sleeps: list[float] = []

    async def asleep(seconds: float) -> None:
        sleeps.append(seconds)

    calls = 0

    @meshlib.retry(attempts=3, sleep=asleep)
    @meshlib.circuit_breaker(failures=10, clock=Clock())
    @meshlib.timeout(5.0)
    async def get() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise CallError("down", code=UNAVAILABLE)
        return "ok"

    assert await get() == "ok"
    assert calls == 3 and len(sleeps) == 2
    assert get.__name__ == "get"


async def test_async_timeout_cancels_and_raises_deadline_exceeded():
    never = asyncio.get_running_loop().create_future()

    @meshlib.timeout(0.01)
    async def stuck() -> None:
        await never

    with pytest.raises(DeadlineExceededError) as info:
        await stuck()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert isinstance(info.value, TimeoutError)


async def test_async_per_try_timeout_is_retried():
    attempts = 0

    async def asleep(seconds: float) -> None:
        pass

    @meshlib.retry(attempts=2, on=[grpc.StatusCode.DEADLINE_EXCEEDED], per_try_timeout=0.01,
                   sleep=asleep)
    async def slow_then_fast() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await asyncio.get_running_loop().create_future()
        return "ok"

    assert await slow_then_fast() == "ok"


def test_policy_validation():
    with pytest.raises(ValueError):
        Retry(attempts=0)
    with pytest.raises(TypeError):
        Retry(on=("UNAVAILABLE",))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        meshlib.timeout(0)
