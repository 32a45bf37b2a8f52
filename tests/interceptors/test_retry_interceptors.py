"""RetryClientInterceptor / AioRetryClientInterceptor against a real flaky server."""

from __future__ import annotations

import grpc
import pytest

import meshlib
from interceptors import AioRetryClientInterceptor, RetryClientInterceptor
from tests.interceptors.interceptor_backend import BACKEND

METHOD = f"/{BACKEND}/UnaryUnary"


def retrying(address: str, policy: meshlib.Retry, sleeps: list[float]) -> grpc.Channel:
    return grpc.intercept_channel(grpc.insecure_channel(address),
                                  RetryClientInterceptor(policy, sleep=sleeps.append))


def test_a_flaky_servers_unavailable_becomes_success(backend):
    ds, address = backend
    sleeps: list[float] = []
    with retrying(address, meshlib.Retry(attempts=3), sleeps) as channel:
        get = channel.unary_unary(METHOD)
        ds.fail_next = 2
        assert get(b"x", timeout=5) == b"echo:x"
        assert ds.calls == 3 and len(sleeps) == 2
        ds.fail_next = 1
        response, call = get.with_call(b"y", timeout=5)
        assert response == b"echo:y" and call.code() == grpc.StatusCode.OK


def test_exhausted_and_non_retryable(backend):
    ds, address = backend
    sleeps: list[float] = []
    with retrying(address, meshlib.Retry(attempts=3), sleeps) as channel:
        get = channel.unary_unary(METHOD)
        ds.fail_next = 5
        with pytest.raises(meshlib.RetryExhaustedError) as info:
            get(b"x", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and info.value.attempts == 3
        assert info.value.details() == "backend told to fail"
        assert ds.calls == 3
        ds.fail_next, ds.code = 1, grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as plain:
            get(b"x", timeout=5)
        assert plain.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert not isinstance(plain.value, meshlib.MeshError) and ds.calls == 4


class Timeouts(grpc.UnaryUnaryClientInterceptor):
    """Inside the retry interceptor: records each attempt's timeout."""

    def __init__(self) -> None:
        self.seen: list[float | None] = []

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        self.seen.append(client_call_details.timeout)
        return continuation(client_call_details, request)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:  # each wait, and the attempt before it: 1 s
        self.now += 1.0


@pytest.mark.parametrize("per_try, timeouts", [(None, [5.0, 4.0, 3.0]), (0.5, [0.5] * 3)])
def test_the_calls_timeout_is_shared_by_its_attempts(backend, per_try, timeouts):
    ds, address = backend
    clock, seen = Clock(), Timeouts()
    policy = meshlib.Retry(attempts=3, per_try_timeout=per_try)
    with grpc.intercept_channel(grpc.insecure_channel(address),
                                RetryClientInterceptor(policy, sleep=clock.sleep, clock=clock),
                                seen) as channel:
        ds.fail_next = 2
        assert channel.unary_unary(METHOD)(b"x", timeout=5) == b"echo:x"
    assert seen.seen == timeouts


def test_no_attempt_starts_after_the_calls_deadline(backend):
    ds, address = backend
    clock, seen = Clock(), Timeouts()
    with grpc.intercept_channel(grpc.insecure_channel(address),
                                RetryClientInterceptor(meshlib.Retry(attempts=5),
                                                       sleep=clock.sleep, clock=clock),
                                seen) as channel:
        ds.fail_next = 10
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(METHOD)(b"x", timeout=1.5)
    assert seen.seen == [1.5, 0.5] and ds.calls == 2  # the third would start at 102 > 101.5
    assert isinstance(info.value, meshlib.DeadlineExceededError)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_aio_retry(backend):
    ds, address = backend
    sleeps: list[float] = []
    interceptor = AioRetryClientInterceptor(meshlib.Retry(attempts=3), sleep=sleeps.append)
    async with grpc.aio.insecure_channel(address, interceptors=[interceptor]) as channel:
        get = channel.unary_unary(METHOD)
        ds.fail_next = 2
        assert await get(b"x", timeout=5) == b"echo:x"
        assert ds.calls == 3 and len(sleeps) == 2
        ds.fail_next = 3
        with pytest.raises(meshlib.RetryExhaustedError) as info:
            await get(b"x", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and ds.calls == 6
