"""The interceptors with real gRPC servers and channels on loopback."""

from __future__ import annotations

import time
from concurrent import futures

import grpc
import pytest

import meshlib
from interceptors import (
    AioCircuitBreakerClientInterceptor,
    AioDeadlineClientInterceptor,
    AioDeadlineServerInterceptor,
    AioRetryClientInterceptor,
    CircuitBreakerClientInterceptor,
    DeadlineClientInterceptor,
    DeadlineServerInterceptor,
    RetryClientInterceptor,
)

SERVICE = "test.Echo"


class Downstream:
    """A server recording the time each call had left, and failing on demand."""

    def __init__(self) -> None:
        self.remaining: list[float | None] = []
        self.fail_next = 0
        self.calls = 0

    def get(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.calls += 1
        self.remaining.append(context.time_remaining())
        if self.fail_next > 0:
            self.fail_next -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        return b"down:" + request

    def stream(self, request: bytes, context: grpc.ServicerContext):
        self.remaining.append(context.time_remaining())
        yield request

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Get": grpc.unary_unary_rpc_method_handler(self.get),
            "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
        })


@pytest.fixture
def downstream():
    ds = Downstream()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((ds.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield ds, f"127.0.0.1:{port}"
    server.stop(0).wait()


def test_sync_server_deadline_reaches_a_downstream_call(downstream):
    ds, address = downstream
    plain = grpc.intercept_channel(grpc.insecure_channel(address), DeadlineClientInterceptor())
    forward = plain.unary_unary(f"/{SERVICE}/Get")

    def relay(request: bytes, context: grpc.ServicerContext) -> bytes:
        assert meshlib.current_deadline() is not None
        return forward(request, timeout=60)  # capped by the incoming deadline

    def relay_stream(request: bytes, context: grpc.ServicerContext):
        yield forward(request, timeout=60)

    server = grpc.server(futures.ThreadPoolExecutor(4),
                         interceptors=[DeadlineServerInterceptor()])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Relay", {
        "Get": grpc.unary_unary_rpc_method_handler(relay),
        "Stream": grpc.unary_stream_rpc_method_handler(relay_stream),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        assert channel.unary_unary("/test.Relay/Get")(b"x", timeout=0.8) == b"down:x"
        assert 0 < ds.remaining[-1] <= 0.81  # not the 60 s asked for
        assert list(channel.unary_stream("/test.Relay/Stream")(b"y", timeout=0.7)) == [
            b"down:y"]
        assert 0 < ds.remaining[-1] <= 0.71
        assert meshlib.current_deadline() is None  # nothing leaks out of handlers
    finally:
        server.stop(0).wait()


def test_client_interceptor_fails_fast_after_the_deadline(downstream):
    _, address = downstream
    channel = grpc.intercept_channel(grpc.insecure_channel(address),
                                     DeadlineClientInterceptor())
    get = channel.unary_unary(f"/{SERVICE}/Get")
    with meshlib.deadline_scope(1.0, now=time.monotonic() - 2), \
            pytest.raises(meshlib.DeadlineExceededError):
        get(b"x", timeout=5)


def test_retry_and_breaker_interceptors(downstream):
    ds, address = downstream
    sleeps: list[float] = []
    channel = grpc.intercept_channel(
        grpc.insecure_channel(address),
        RetryClientInterceptor(meshlib.Retry(attempts=3), sleep=sleeps.append))
    get = channel.unary_unary(f"/{SERVICE}/Get")
    ds.fail_next = 2
    assert get(b"x", timeout=5) == b"down:x"
    assert ds.calls == 3 and len(sleeps) == 2
    ds.fail_next = 5
    with pytest.raises(meshlib.RetryExhaustedError) as info:
        get(b"x", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    breaker = meshlib.CircuitBreaker(failures=2, reset_timeout=60)
    guarded = grpc.intercept_channel(grpc.insecure_channel(address),
                                     CircuitBreakerClientInterceptor(breaker))
    call = guarded.unary_unary(f"/{SERVICE}/Get")
    ds.fail_next = 2
    for _ in range(2):
        with pytest.raises(grpc.RpcError):
            call(b"x", timeout=5)
    calls = ds.calls
    with pytest.raises(meshlib.CircuitOpenError):
        call(b"x", timeout=5)
    assert ds.calls == calls


async def test_aio_interceptors(downstream):
    ds, address = downstream

    async def nosleep(seconds: float) -> None:
        pass

    forward_channel = grpc.aio.insecure_channel(
        address, interceptors=[AioDeadlineClientInterceptor(),
                               AioRetryClientInterceptor(meshlib.Retry(attempts=3),
                                                         sleep=nosleep)])
    forward = forward_channel.unary_unary(f"/{SERVICE}/Get")

    async def relay(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await forward(request, timeout=60)

    server = grpc.aio.server(interceptors=[AioDeadlineServerInterceptor()])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Relay", {
        "Get": grpc.unary_unary_rpc_method_handler(relay)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            ds.fail_next = 1
            assert await channel.unary_unary("/test.Relay/Get")(b"a", timeout=0.9) == b"down:a"
            assert 0 < ds.remaining[-1] <= 0.91
        breaker = meshlib.CircuitBreaker(failures=1, reset_timeout=60)
        async with grpc.aio.insecure_channel(
                address, interceptors=[AioCircuitBreakerClientInterceptor(breaker)]) as guarded:
            call = guarded.unary_unary(f"/{SERVICE}/Get")
            ds.fail_next = 1
            with pytest.raises(grpc.RpcError):
                await call(b"x", timeout=5)
            with pytest.raises(meshlib.CircuitOpenError):
                await call(b"x", timeout=5)
    finally:
        await server.stop(0)
        await forward_channel.close()
