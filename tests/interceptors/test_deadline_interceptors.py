"""Deadline propagation through real servers and channels on loopback: a handler's
incoming deadline caps the calls it makes downstream, for every handler kind."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

import meshlib
from interceptors import (
    AioDeadlineClientInterceptor,
    AioDeadlineServerInterceptor,
    CallDetails,
    DeadlineClientInterceptor,
    DeadlineServerInterceptor,
    aio_interceptors,
)
from tests.interceptors.interceptor_backend import BACKEND, KINDS, acall_every_kind, call_every_kind

RELAY = "test.Relay"
ANSWERS = [b"echo:a", [b"echo:b"], b"echo:cd", [b"echo:e"]]
SLACK = 0.2  # grpc measures time_remaining on its own clock (seen 0.1 s ahead)


def test_sync_server_deadline_reaches_downstream_calls_for_every_kind(backend, serve):
    ds, address = backend
    downstream = grpc.intercept_channel(grpc.insecure_channel(address),
                                        DeadlineClientInterceptor())
    upstream: list[float] = []

    def forward(method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        upstream.append(context.time_remaining())
        assert meshlib.current_deadline() is not None
        return downstream.unary_unary(f"/{BACKEND}/{method}")(request, timeout=60)

    def unary_unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        return forward("UnaryUnary", request, context)

    def unary_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield forward("UnaryUnary", request, context)

    def stream_unary(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return forward("UnaryUnary", b"".join(requests), context)

    def stream_stream(requests: Iterator[bytes],
                      context: grpc.ServicerContext) -> Iterator[bytes]:
        return iter([forward("UnaryUnary", r, context) for r in requests])  # not a generator

    relay = serve(grpc.method_handlers_generic_handler(RELAY, {
        "UnaryUnary": grpc.unary_unary_rpc_method_handler(unary_unary),
        "UnaryStream": grpc.unary_stream_rpc_method_handler(unary_stream),
        "StreamUnary": grpc.stream_unary_rpc_method_handler(stream_unary),
        "StreamStream": grpc.stream_stream_rpc_method_handler(stream_stream),
    }), interceptors=(DeadlineServerInterceptor(),))
    with grpc.insecure_channel(relay) as channel:
        assert call_every_kind(channel, RELAY, timeout=0.9) == ANSWERS
    assert len(ds.remaining) == len(upstream) == 4
    for down, up in zip(ds.remaining, upstream, strict=True):
        assert down is not None and 0 < down <= up + SLACK < 0.9 + 2 * SLACK  # not 60 s
    assert meshlib.current_deadline() is None


def test_a_call_without_deadline_sets_none(serve):
    seen: list[float | None] = []

    def handler(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.append(meshlib.current_deadline())  # grpc says ~9.2e18 s are left
        return b""

    relay = serve(grpc.method_handlers_generic_handler(RELAY, {
        "UnaryUnary": grpc.unary_unary_rpc_method_handler(handler)}),
        interceptors=(DeadlineServerInterceptor(),))
    with grpc.insecure_channel(relay) as channel:
        channel.unary_unary(f"/{RELAY}/UnaryUnary")(b"")
    assert seen == [None]


def test_an_abandoned_stream_leaves_no_deadline_in_the_worker_thread(serve):
    seen: list[float | None] = []

    def endless(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        while context.is_active():
            yield b"x" * 1024

    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.append(meshlib.current_deadline())
        return b""

    relay = serve(grpc.method_handlers_generic_handler(RELAY, {
        "UnaryStream": grpc.unary_stream_rpc_method_handler(endless),
        "UnaryUnary": grpc.unary_unary_rpc_method_handler(unary)}),
        interceptors=(DeadlineServerInterceptor(),), workers=1)
    with grpc.insecure_channel(relay) as channel:
        stream = channel.unary_stream(f"/{RELAY}/UnaryStream")(b"", timeout=30)
        next(stream)
        stream.cancel()
        channel.unary_unary(f"/{RELAY}/UnaryUnary")(b"", timeout=30)  # the same worker
        channel.unary_unary(f"/{RELAY}/UnaryUnary")(b"")
    assert seen[0] is not None
    assert seen[1] is None


async def test_aio_server_deadline_reaches_downstream_calls_for_every_kind(backend,
                                                                           aio_serve):
    ds, address = backend
    downstream = grpc.aio.insecure_channel(
        address, interceptors=aio_interceptors(AioDeadlineClientInterceptor()))
    forward_call = downstream.unary_unary(f"/{BACKEND}/UnaryUnary")
    upstream: list[float] = []

    async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        upstream.append(context.time_remaining())
        assert meshlib.current_deadline() is not None
        return await forward_call(request, timeout=60)

    async def unary_unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await forward(request, context)

    async def unary_stream(request: bytes,
                           context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        yield await forward(request, context)

    async def stream_unary(requests: AsyncIterator[bytes],
                           context: grpc.aio.ServicerContext) -> bytes:
        return await forward(b"".join([r async for r in requests]), context)

    async def stream_stream(requests: AsyncIterator[bytes],
                            context: grpc.aio.ServicerContext) -> None:
        async for request in requests:  # the context.write() style
            await context.write(await forward(request, context))

    relay = await aio_serve(grpc.method_handlers_generic_handler(RELAY, {
        "UnaryUnary": grpc.unary_unary_rpc_method_handler(unary_unary),
        "UnaryStream": grpc.unary_stream_rpc_method_handler(unary_stream),
        "StreamUnary": grpc.stream_unary_rpc_method_handler(stream_unary),
        "StreamStream": grpc.stream_stream_rpc_method_handler(stream_stream),
    }), interceptors=(AioDeadlineServerInterceptor(),))
    try:
        async with grpc.aio.insecure_channel(relay) as channel:
            assert await acall_every_kind(channel, RELAY, timeout=0.9) == ANSWERS
    finally:
        await downstream.close()
    for down, up in zip(ds.remaining, upstream, strict=True):
        assert down is not None and 0 < down <= up + SLACK < 0.9 + 2 * SLACK


def test_client_interceptor_caps_every_kind_and_fails_fast(backend):
    ds, address = backend
    with grpc.intercept_channel(grpc.insecure_channel(address),
                                DeadlineClientInterceptor()) as channel:
        assert call_every_kind(channel, timeout=60) == ANSWERS
        assert all(r > 50 for r in ds.remaining)  # no deadline in force: untouched
        with meshlib.deadline_scope(0.5):
            assert call_every_kind(channel, timeout=60) == ANSWERS
            assert call_every_kind(channel) == ANSWERS  # no timeout of its own
        assert all(r <= 0.5 + SLACK for r in ds.remaining[4:])
        calls = ds.calls
        with meshlib.deadline_scope(1.0, now=time.monotonic() - 2):
            for kind in KINDS:
                with pytest.raises(meshlib.DeadlineExceededError, match=kind):
                    call_every_kind_one(channel, kind)
        assert ds.calls == calls


def call_every_kind_one(channel: grpc.Channel, kind: str) -> object:
    method = f"/{BACKEND}/{kind}"
    if kind == "UnaryUnary":
        return channel.unary_unary(method)(b"x", timeout=5)
    if kind == "UnaryStream":
        return list(channel.unary_stream(method)(b"x", timeout=5))
    if kind == "StreamUnary":
        return channel.stream_unary(method)(iter([b"x"]), timeout=5)
    return list(channel.stream_stream(method)(iter([b"x"]), timeout=5))


async def test_aio_client_interceptor_caps_every_kind_and_fails_fast(backend):
    ds, address = backend
    async with grpc.aio.insecure_channel(
            address, interceptors=aio_interceptors(AioDeadlineClientInterceptor())) as channel:
        with meshlib.deadline_scope(0.5):
            assert await acall_every_kind(channel, timeout=60) == ANSWERS
        assert len(ds.remaining) == 4 and all(r <= 0.5 + SLACK for r in ds.remaining)
        with meshlib.deadline_scope(1.0, now=time.monotonic() - 2), \
                pytest.raises(meshlib.DeadlineExceededError):
            await channel.stream_unary(f"/{BACKEND}/StreamUnary")(iter([b"x"]), timeout=5)
        with meshlib.deadline_scope(1.0, now=time.monotonic() - 2), \
                pytest.raises(meshlib.DeadlineExceededError):
            await channel.unary_unary(f"/{BACKEND}/UnaryUnary")(b"x", timeout=5)
    assert ds.calls == 4


def test_call_details_is_a_frozen_dataclass_with_replace():
    details = CallDetails("/a/B", 5.0)
    assert isinstance(details, grpc.ClientCallDetails)
    assert details._replace(timeout=1.0) == CallDetails("/a/B", 1.0)
    with pytest.raises(AttributeError):
        details.timeout = 1.0  # type: ignore[misc]
