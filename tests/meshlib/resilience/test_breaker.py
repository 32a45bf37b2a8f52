"""CircuitBreaker: pybreaker's state machine on a fake clock, with admit/record."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pybreaker
import pytest

import meshlib
from meshlib import CircuitBreaker, CircuitOpenError, NoHealthyEndpointError
from meshlib.errors import CallError, DeadlineExceededError
from meshlib.resilience import FAILURE_CODES, is_failure


def error(code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> CallError:
    return CallError(code.name, code=code)


def trip(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        breaker.admit()
        breaker.record(error())


def test_opens_after_n_failures_then_half_opens_and_closes(fake_clock):
    breaker = CircuitBreaker(failures=3, reset_timeout=30, clock=fake_clock, name="svc")
    trip(breaker, 2)
    assert breaker.state == "closed" and breaker.consecutive_failures == 2
    trip(breaker, 1)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError, match="svc") as info:
        breaker.admit()
    assert isinstance(info.value, grpc.RpcError)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.service == "svc"
    fake_clock.advance(29.9)
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    fake_clock.advance(0.1)
    assert breaker.state == "half-open"
    breaker.admit()  # the probe
    with pytest.raises(CircuitOpenError, match="probe"):
        breaker.admit()  # one probe at a time
    breaker.record(None)
    assert breaker.state == "closed" and breaker.consecutive_failures == 0
    breaker.admit()


def test_a_failed_probe_opens_again_for_a_full_timeout(fake_clock):
    breaker = CircuitBreaker(failures=1, reset_timeout=10, clock=fake_clock)
    trip(breaker, 1)
    fake_clock.advance(10)
    breaker.admit()
    breaker.record(error())
    assert breaker.state == "open"
    fake_clock.advance(9.9)
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    fake_clock.advance(0.1)
    breaker.admit()


def test_several_half_open_probes(fake_clock):
    breaker = CircuitBreaker(failures=1, reset_timeout=5, half_open_probes=2, clock=fake_clock)
    trip(breaker, 1)
    fake_clock.advance(5)
    breaker.admit()
    breaker.admit()
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    breaker.record(None)  # the first probe's success closes the circuit
    assert breaker.state == "closed"


@pytest.mark.parametrize("code", sorted(FAILURE_CODES, key=lambda c: c.name))
def test_failure_codes_count(code):
    assert is_failure(error(code))


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                  grpc.StatusCode.PERMISSION_DENIED,
                                  grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_request_errors_do_not_count(code, fake_clock):
    breaker = CircuitBreaker(failures=1, clock=fake_clock)
    for _ in range(5):
        breaker.admit()
        breaker.record(error(code))
    assert breaker.state == "closed" and breaker.consecutive_failures == 0


def test_success_resets_the_count_and_other_exceptions_count(fake_clock):
    breaker = CircuitBreaker(failures=2, clock=fake_clock)
    breaker.record(error())
    breaker.record(None)
    breaker.record(ValueError("not grpc"))
    assert breaker.state == "closed" and breaker.consecutive_failures == 1
    breaker.record(DeadlineExceededError("slow"))
    assert breaker.state == "open"


def test_call_and_a_custom_failure_test(fake_clock):
    breaker = CircuitBreaker(failures=1, is_failure=lambda e: isinstance(e, KeyError),
                             clock=fake_clock)

    def bad_value() -> None:
        raise ValueError("not counted")

    with pytest.raises(ValueError):
        breaker.call(bad_value)
    assert breaker.state == "closed"
    with pytest.raises(KeyError):
        breaker.call(dict().__getitem__, "x")
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: 1)
    fake_clock.advance(30)
    assert breaker.call(lambda x: x * 2, 21) == 42
    assert breaker.state == "closed"


async def test_acall(fake_clock):
    breaker = CircuitBreaker(failures=1, reset_timeout=30, clock=fake_clock)
    calls = 0

    async def boom() -> None:
        nonlocal calls
        calls += 1
        raise NoHealthyEndpointError("x")

    with pytest.raises(NoHealthyEndpointError):
        await breaker.acall(boom)
    with pytest.raises(CircuitOpenError):
        await breaker.acall(boom)
    assert calls == 1


async def test_a_cancelled_probe_frees_its_slot_and_counts_nothing(fake_clock):
    breaker = CircuitBreaker(failures=1, reset_timeout=10, clock=fake_clock)
    trip(breaker, 1)
    fake_clock.advance(10)
    never = asyncio.get_running_loop().create_future()
    probe = asyncio.ensure_future(breaker.acall(lambda: never))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):
        breaker.admit()  # the probe is in flight
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert breaker.state == "half-open"  # not closed by a cancellation
    breaker.admit()  # the slot is free again


def test_release_and_a_lost_probe(fake_clock):
    breaker = CircuitBreaker(failures=1, reset_timeout=10, clock=fake_clock)
    breaker.release()  # closed: nothing to do
    trip(breaker, 1)
    fake_clock.advance(10)
    breaker.admit()
    breaker.release()
    breaker.admit()  # released slot reused
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    fake_clock.advance(10)  # its outcome never came: presumed lost
    breaker.admit()


def test_outcomes_of_calls_admitted_before_the_trip_are_ignored(fake_clock):
    breaker = CircuitBreaker(failures=1, reset_timeout=10, clock=fake_clock)
    breaker.admit()
    breaker.admit()
    breaker.record(error())
    fake_clock.advance(10)
    breaker.record(None)  # the late one: must not close the circuit without a probe
    assert breaker.state == "half-open"
    breaker.admit()
    breaker.record(error())
    assert breaker.state == "open"


def test_pybreakers_own_timeout_runs_on_the_injected_clock(fake_clock):
    breaker = CircuitBreaker(failures=1, reset_timeout=30, clock=fake_clock)
    trip(breaker, 1)
    inner = breaker._breaker
    with pytest.raises(pybreaker.CircuitBreakerError):
        inner.call(lambda: None)
    fake_clock.advance(30)
    inner.call(lambda: None)  # pybreaker itself half-opens, then closes
    assert breaker.state == "closed"


class Explodes:
    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"the hot path touched {name}")

    def __enter__(self) -> None:
        raise AssertionError("the hot path took a lock")

    def __exit__(self, *exc: object) -> None:
        return None


def test_the_closed_quiet_path_takes_no_lock_and_calls_no_pybreaker():
    breaker = CircuitBreaker()
    breaker._lock = Explodes()  # type: ignore[assignment]
    breaker._breaker = Explodes()  # type: ignore[assignment]
    for _ in range(3):
        breaker.admit()
        breaker.record(None)


def test_shared_across_threads():
    breaker = CircuitBreaker(failures=50, reset_timeout=60)
    refused = []

    def work() -> None:
        for _ in range(100):
            try:
                breaker.admit()
            except CircuitOpenError:
                refused.append(1)
                continue
            breaker.record(error())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert breaker.state == "open" and refused


def test_decorator_opens_and_half_opens_on_a_fake_clock(fake_clock):
    calls = 0

    @meshlib.circuit_breaker(failures=3, reset_timeout=30, clock=fake_clock)
    def get() -> str:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise error()
        return "ok"

    for _ in range(3):
        with pytest.raises(CallError):
            get()
    with pytest.raises(CircuitOpenError, match="get"):
        get()
    assert calls == 3
    fake_clock.advance(30)
    assert get() == "ok"
    assert get.circuit_breaker.state == "closed"
    assert get.__name__ == "get"


async def test_async_decorator_and_a_shared_breaker(fake_clock):
    shared = CircuitBreaker(failures=2, reset_timeout=10, clock=fake_clock, name="payments")

    @meshlib.circuit_breaker(breaker=shared)
    async def charge() -> None:
        raise error()

    @meshlib.circuit_breaker(breaker=shared)
    def refund() -> str:
        return "refunded"

    for _ in range(2):
        with pytest.raises(CallError):
            await charge()
    with pytest.raises(CircuitOpenError, match="payments"):
        refund()  # the same circuit
    assert charge.circuit_breaker is refund.circuit_breaker is shared


def test_each_decorated_function_gets_its_own_breaker(fake_clock):
    guard = meshlib.circuit_breaker(failures=1, clock=fake_clock)
    a = guard(lambda: (_ for _ in ()).throw(error()))
    b = guard(lambda: "b")
    with pytest.raises(CallError):
        a()
    assert b() == "b"
    assert a.circuit_breaker is not b.circuit_breaker


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        CircuitBreaker(failures=0)
    with pytest.raises(ValueError):
        CircuitBreaker(half_open_probes=0)
    with pytest.raises(ValueError):
        CircuitBreaker(reset_timeout=-1)
    assert "closed" in repr(CircuitBreaker(name="x"))
