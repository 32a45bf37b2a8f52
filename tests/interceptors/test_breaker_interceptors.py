"""CircuitBreakerClientInterceptor / AioCircuitBreakerClientInterceptor against a real
server that fails on demand, on a fake clock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest

import meshlib
from interceptors import (
    AioCircuitBreakerClientInterceptor,
    CircuitBreakerClientInterceptor,
    DeadlineClientInterceptor,
    RetryClientInterceptor,
    aio_interceptors,
)
from tests.interceptors.interceptor_backend import BACKEND

METHOD = f"/{BACKEND}/UnaryUnary"


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_opens_fails_fast_and_closes_after_the_reset_timeout(backend):
    ds, address = backend
    clock = Clock()
    breaker = meshlib.CircuitBreaker(failures=2, reset_timeout=30, clock=clock, name="backend")
    with grpc.intercept_channel(grpc.insecure_channel(address),
                                CircuitBreakerClientInterceptor(breaker)) as channel:
        get = channel.unary_unary(METHOD)
        ds.fail_next = 2
        for _ in range(2):
            with pytest.raises(grpc.RpcError):
                get(b"x", timeout=5)
        with pytest.raises(meshlib.CircuitOpenError, match="backend"):
            get(b"x", timeout=5)
        with pytest.raises(meshlib.CircuitOpenError):
            list(channel.unary_stream(f"/{BACKEND}/UnaryStream")(b"x", timeout=5))
        assert ds.calls == 2  # refused calls never reach the server
        clock.now += 30
        assert get(b"x", timeout=5) == b"echo:x"  # the probe
        assert breaker.state == "closed"


def test_futures_and_streams_are_recorded_when_they_end(backend):
    ds, address = backend
    breaker = meshlib.CircuitBreaker(failures=3, reset_timeout=30, clock=Clock())
    with grpc.intercept_channel(grpc.insecure_channel(address),
                                CircuitBreakerClientInterceptor(breaker)) as channel:
        ds.fail_next = 3
        future = channel.unary_unary(METHOD).future(b"x", timeout=5)
        with pytest.raises(grpc.RpcError):
            future.result()
        with pytest.raises(grpc.RpcError):
            list(channel.unary_stream(f"/{BACKEND}/UnaryStream")(b"x", timeout=5))
        with pytest.raises(grpc.RpcError):
            list(channel.stream_stream(f"/{BACKEND}/StreamStream")(iter([b"x"]), timeout=5))
        # Outcomes are recorded from grpc's done callbacks, which may run just after
        # the caller has seen the error.
        deadline = time.monotonic() + 5
        while breaker.state != "open" and time.monotonic() < deadline:
            time.sleep(0.005)
        assert breaker.state == "open"


def test_retry_outside_the_breaker_does_not_retry_an_open_circuit(backend):
    ds, address = backend
    breaker = meshlib.CircuitBreaker(failures=2, reset_timeout=30, clock=Clock())
    sleeps: list[float] = []
    with grpc.intercept_channel(
            grpc.insecure_channel(address), DeadlineClientInterceptor(),
            RetryClientInterceptor(meshlib.Retry(attempts=5), sleep=sleeps.append),
            CircuitBreakerClientInterceptor(breaker)) as channel:
        ds.fail_next = 10
        with pytest.raises(meshlib.CircuitOpenError):
            channel.unary_unary(METHOD)(b"x", timeout=5)
    assert ds.calls == 2 and len(sleeps) == 2


async def test_aio_breaker_unary_and_stream_unary(backend):
    ds, address = backend
    breaker = meshlib.CircuitBreaker(failures=2, reset_timeout=30, clock=Clock())

    async def requests() -> AsyncIterator[bytes]:
        yield b"x"

    async with grpc.aio.insecure_channel(address, interceptors=aio_interceptors(
            AioCircuitBreakerClientInterceptor(breaker))) as channel:
        ds.fail_next = 2
        with pytest.raises(grpc.RpcError):
            await channel.unary_unary(METHOD)(b"x", timeout=5)
        with pytest.raises(grpc.RpcError):
            await channel.stream_unary(f"/{BACKEND}/StreamUnary")(requests(), timeout=5)
        with pytest.raises(meshlib.CircuitOpenError):
            await channel.unary_unary(METHOD)(b"x", timeout=5)
    assert ds.calls == 2
