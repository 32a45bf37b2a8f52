"""The Retry policy and the retry decorator, sync and async, with injected sleeps."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import tenacity

import meshlib
from meshlib import (
    CircuitOpenError,
    DeadlineExceededError,
    Retry,
    RetryBudget,
    RetryExhaustedError,
)
from meshlib.errors import CallError
from meshlib.resilience import RETRIES_OWNED, RetryRun

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


class Flaky:
    """Fails ``failures`` times with ``error()``, then answers; records what it saw."""

    def __init__(self, failures: int, code: grpc.StatusCode = UNAVAILABLE,
                 error: type[BaseException] | None = None) -> None:
        self.failures = failures
        self.code = code
        self.error = error
        self.calls = 0
        self.owned: list[bool] = []
        self.deadlines: list[float | None] = []

    def step(self) -> str:
        self.calls += 1
        self.owned.append(RETRIES_OWNED.get())
        self.deadlines.append(meshlib.current_deadline())
        if self.calls <= self.failures:
            raise self.error() if self.error else CallError("flaky", code=self.code)
        return "ok"

    def __call__(self) -> str:
        return self.step()

    async def acall(self) -> str:
        return self.step()


def test_retries_until_success_with_the_sleeps_tenacity_asked_for(fake_sleep):
    flaky = Flaky(2)
    fn = meshlib.retry(attempts=3, backoff=0.1, max_backoff=1.0, sleep=fake_sleep)(flaky)
    assert fn() == "ok"
    assert flaky.calls == 3 and len(fake_sleep) == 2
    assert 0 <= fake_sleep[0] <= 0.1 and 0 <= fake_sleep[1] <= 0.2  # full jitter
    assert flaky.owned == [True, True, True]  # mesh channels inside leave retries to us
    assert not RETRIES_OWNED.get()


def test_backoff_is_capped(fake_sleep):
    flaky = Flaky(7)
    meshlib.retry(attempts=8, backoff=1.0, max_backoff=2.0, sleep=fake_sleep)(flaky)()
    assert len(fake_sleep) == 7 and max(fake_sleep) <= 2.0


def test_exhausted_is_an_rpc_error_with_the_last_code(fake_sleep):
    flaky = Flaky(10)
    fn = meshlib.retry(attempts=3, sleep=fake_sleep)(flaky)
    with pytest.raises(RetryExhaustedError, match="3 attempts") as info:
        fn()
    assert flaky.calls == 3
    err = info.value
    assert isinstance(err, grpc.RpcError) and isinstance(err, meshlib.MeshError)
    assert err.code() == UNAVAILABLE and err.attempts == 3
    assert isinstance(err.last_error, CallError) and err.__cause__ is err.last_error


def test_non_retryable_errors_propagate_unchanged(fake_sleep):
    flaky = Flaky(1, code=grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(CallError) as info:
        meshlib.retry(sleep=fake_sleep)(flaky)()
    assert type(info.value) is CallError and flaky.calls == 1 and fake_sleep == []
    with pytest.raises(KeyError):
        meshlib.retry(sleep=fake_sleep)(Flaky(1, error=KeyError))()


def test_a_later_non_retryable_error_propagates_unchanged(fake_sleep):
    codes = iter([UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED])

    @meshlib.retry(attempts=5, sleep=fake_sleep)
    def fn() -> None:
        raise CallError("x", code=next(codes))

    with pytest.raises(CallError) as info:
        fn()
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert not isinstance(info.value, RetryExhaustedError)


def test_one_attempt_means_no_retry(fake_sleep):
    flaky = Flaky(1)
    with pytest.raises(CallError) as info:
        meshlib.retry(attempts=1, sleep=fake_sleep)(flaky)()
    assert not isinstance(info.value, RetryExhaustedError) and flaky.calls == 1


def test_on_exception_types(fake_sleep):
    flaky = Flaky(2, error=ConnectionError)
    assert meshlib.retry(on=[ConnectionError], sleep=fake_sleep)(flaky)() == "ok"
    with pytest.raises(RetryExhaustedError) as info:
        meshlib.retry(on=[ConnectionError], sleep=fake_sleep)(Flaky(9, error=ConnectionError))()
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    assert isinstance(info.value.last_error, ConnectionError)


def test_a_shared_policy_shares_its_budget_and_budget_refusal_is_unchanged(fake_clock,
                                                                           fake_sleep):
    budget = RetryBudget(percent=0, min_retries_per_second=0.2, window=10, clock=fake_clock)
    policy = Retry(attempts=5, on=(ConnectionError,), budget=budget)
    calls = []

    @meshlib.retry(policy=policy, sleep=fake_sleep)
    def a() -> None:
        calls.append("a")
        raise ConnectionError("a")

    @meshlib.retry(policy=policy, sleep=fake_sleep)
    def b() -> None:
        calls.append("b")
        raise ConnectionError("b")

    with pytest.raises(ConnectionError, match="a"):
        a()  # 1 + 2 retries (0.2/s × 10 s), then the budget refuses: the last error
    with pytest.raises(ConnectionError, match="b"):
        b()  # the shared budget is spent: no retry at all
    assert calls == ["a", "a", "a", "b"]
    assert a.retry_policy is b.retry_policy is policy


def test_the_last_attempt_spends_no_budget(fake_clock, fake_sleep):
    budget = RetryBudget(percent=0, min_retries_per_second=0.5, window=10, clock=fake_clock)
    with pytest.raises(RetryExhaustedError):
        meshlib.retry(attempts=3, budget=budget, sleep=fake_sleep)(Flaky(9))()
    assert sum(budget.try_spend() for _ in range(10)) == 3  # 5 - 2 retries


def test_an_open_circuit_is_not_retried_unless_asked(fake_sleep):
    def refuse() -> None:
        raise CircuitOpenError("open")

    with pytest.raises(CircuitOpenError):
        meshlib.retry(attempts=5, on=[UNAVAILABLE, Exception], sleep=fake_sleep)(refuse)()
    assert fake_sleep == []
    with pytest.raises(RetryExhaustedError):
        meshlib.retry(attempts=2, on=[CircuitOpenError], sleep=fake_sleep)(refuse)()
    assert len(fake_sleep) == 1


def test_per_try_timeout_scopes_each_attempt_and_retries_deadline_exceeded(fake_clock,
                                                                          fake_sleep):
    flaky = Flaky(1, code=grpc.StatusCode.DEADLINE_EXCEEDED)
    fn = meshlib.retry(per_try_timeout=0.5, sleep=fake_sleep, clock=fake_clock)(flaky)
    assert fn() == "ok"
    first, second = flaky.deadlines
    assert first == 1000.5 and second == pytest.approx(1000.5 + fake_sleep[0])
    assert meshlib.current_deadline() is None
    with pytest.raises(CallError):  # without a per-try timeout it is not retryable
        meshlib.retry(sleep=fake_sleep)(Flaky(1, code=grpc.StatusCode.DEADLINE_EXCEEDED))()


def test_no_retry_once_the_deadline_in_force_has_passed(fake_clock, fake_sleep):
    calls = 0

    @meshlib.retry(attempts=5, backoff=1.0, max_backoff=1.0, sleep=fake_sleep,
                   clock=fake_clock)
    def slow() -> None:
        nonlocal calls
        calls += 1
        fake_clock.advance(1.0)  # each attempt takes a second
        raise CallError("down", code=UNAVAILABLE)

    with meshlib.deadline_scope(2.5, now=fake_clock()), pytest.raises(CallError) as info:
        slow()
    assert not isinstance(info.value, RetryExhaustedError)  # cut short: the last error
    assert calls <= 3  # none started after the deadline (1002.5)


def test_a_successful_call_builds_no_tenacity_object(monkeypatch):
    def explode(*args: object, **kwargs: object) -> None:
        raise AssertionError("tenacity on the success path")

    monkeypatch.setattr(tenacity, "Retrying", explode)
    monkeypatch.setattr(tenacity, "AsyncRetrying", explode)
    assert meshlib.retry()(lambda: "ok")() == "ok"


async def test_async_retries_with_a_plain_or_async_sleep(fake_sleep):
    flaky = Flaky(2)
    assert await meshlib.retry(sleep=fake_sleep)(flaky.acall)() == "ok"
    assert len(fake_sleep) == 2 and flaky.owned == [True] * 3

    slept: list[float] = []

    async def asleep(seconds: float) -> None:
        slept.append(seconds)

    with pytest.raises(RetryExhaustedError) as info:
        await meshlib.retry(attempts=4, sleep=asleep)(Flaky(9).acall)()
    assert len(slept) == 3 and info.value.attempts == 4


async def test_async_per_try_timeout_is_enforced_and_retried():
    attempts = 0

    @meshlib.retry(attempts=2, per_try_timeout=0.001, sleep=lambda s: None)
    async def slow_then_fast() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await asyncio.get_running_loop().create_future()  # never done
        return "ok"

    assert await slow_then_fast() == "ok"

    @meshlib.retry(attempts=2, per_try_timeout=0.001, sleep=lambda s: None)
    async def stuck() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(RetryExhaustedError) as info:
        await stuck()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert isinstance(info.value.last_error, DeadlineExceededError)


async def test_async_a_timeout_error_from_inside_is_not_a_per_try_timeout():
    @meshlib.retry(per_try_timeout=10, sleep=lambda s: None)
    async def fn() -> None:
        raise TimeoutError("from inside")

    with pytest.raises(TimeoutError, match="from inside"):
        await fn()


def test_policy_validation():
    with pytest.raises(ValueError):
        Retry(attempts=0)
    with pytest.raises(ValueError):
        Retry(backoff=2, max_backoff=1)
    with pytest.raises(ValueError):
        Retry(per_try_timeout=0)
    with pytest.raises(TypeError):
        Retry(on=("UNAVAILABLE",))  # type: ignore[arg-type]
    policy = Retry(on=[UNAVAILABLE, ConnectionError])  # type: ignore[arg-type]
    assert policy.on == (UNAVAILABLE, ConnectionError)
    assert policy == Retry(on=(UNAVAILABLE, ConnectionError))
    with pytest.raises(AttributeError):
        policy.attempts = 5  # type: ignore[misc]


def test_the_engine_alone_steps_through_waits_and_gives_up(fake_clock):
    # RetryRun is what every driver steps through: no I/O, no sleeping of its own.
    run = RetryRun(Retry(attempts=3, backoff=0.1, max_backoff=1.0), name="get",
                   clock=fake_clock)
    first = run.next_wait(CallError("x", code=UNAVAILABLE))
    second = run.next_wait(CallError("x", code=UNAVAILABLE))
    assert first is not None and 0 <= first <= 0.1
    assert second is not None and 0 <= second <= 0.2
    last = CallError("x", code=UNAVAILABLE)
    assert run.next_wait(last) is None  # the third attempt was the last
    final = run.final(last)
    assert isinstance(final, RetryExhaustedError) and final.attempts == 3


def test_the_engine_stops_at_the_deadline_and_builds_nothing_for_a_final_error(
        fake_clock, monkeypatch):
    run = RetryRun(Retry(attempts=5, backoff=10.0, max_backoff=10.0), clock=fake_clock,
                   deadline=fake_clock() + 0.001)
    built = []
    monkeypatch.setattr(tenacity, "Retrying",
                        lambda *a, **k: built.append(1))  # never reached
    error = CallError("x", code=grpc.StatusCode.INTERNAL)
    assert run.next_wait(error) is None and built == []
    assert run.final(error) is error
