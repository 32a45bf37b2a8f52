"""CircuitBreaker: pybreaker's state machine on a fake clock, with admit/record."""

from __future__ import annotations

import grpc
import pytest

from meshlib import CircuitBreaker, CircuitOpenError, NoHealthyEndpointError
from meshlib.errors import CallError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def unavailable() -> CallError:
    return CallError("down", code=grpc.StatusCode.UNAVAILABLE)


def test_opens_after_n_failures_then_half_opens_and_closes():
    clock = Clock()
    breaker = CircuitBreaker(failures=3, reset_timeout=30, clock=clock, name="svc")
    for _ in range(3):
        breaker.admit()
        breaker.record(unavailable())
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError, match="svc") as info:
        breaker.admit()
    assert isinstance(info.value, grpc.RpcError)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    clock.now += 29.9
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    clock.now += 0.2
    assert breaker.state == "half-open"
    breaker.admit()  # the probe
    with pytest.raises(CircuitOpenError, match="probe"):
        breaker.admit()  # one probe at a time
    breaker.record(None)
    assert breaker.state == "closed" and breaker.failures == 0


def test_a_failed_probe_opens_again_for_a_full_timeout():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_timeout=10, clock=clock)
    breaker.record(unavailable())
    clock.now += 10
    breaker.admit()
    breaker.record(unavailable())
    assert breaker.state == "open"
    clock.now += 9
    with pytest.raises(CircuitOpenError):
        breaker.admit()


def test_success_resets_the_count_and_request_errors_do_not_count():
    breaker = CircuitBreaker(failures=2, clock=Clock())
    breaker.record(unavailable())
    breaker.record(None)
    breaker.record(unavailable())
    assert breaker.state == "closed"
    for _ in range(5):
        breaker.record(CallError("bad request", code=grpc.StatusCode.INVALID_ARGUMENT))
    assert breaker.state == "closed" and breaker.failures == 0


def test_call_and_custom_failure_test():
    breaker = CircuitBreaker(failures=1, is_failure=lambda e: isinstance(e, KeyError),
                             clock=Clock())
    with pytest.raises(ValueError):
        breaker.call(lambda: (_ for _ in ()).throw(ValueError("not counted")))
    assert breaker.state == "closed"
    with pytest.raises(KeyError):
        breaker.call(lambda: {}["x"])
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: 1)


async def test_acall():
    breaker = CircuitBreaker(failures=1, clock=Clock())

    async def boom() -> None:
        raise NoHealthyEndpointError("x")

    with pytest.raises(NoHealthyEndpointError):
        await breaker.acall(boom)
    with pytest.raises(CircuitOpenError):
        await breaker.acall(boom)


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        CircuitBreaker(failures=0)
    with pytest.raises(ValueError):
        CircuitBreaker(half_open_probes=0)
