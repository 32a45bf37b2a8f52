"""A gRPC backend for the interceptor tests — it records the time each call had left
and fails on demand — and helpers making one call of each kind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

BACKEND = "test.Backend"
KINDS = ("UnaryUnary", "UnaryStream", "StreamUnary", "StreamStream")


class Backend:
    """Every kind echoes; ``fail_next`` calls fail with ``code`` first."""

    def __init__(self) -> None:
        self.remaining: list[float | None] = []
        self.calls = 0
        self.fail_next = 0
        self.code = grpc.StatusCode.UNAVAILABLE

    def _enter(self, context: grpc.ServicerContext) -> None:
        self.calls += 1
        self.remaining.append(context.time_remaining())
        if self.fail_next > 0:
            self.fail_next -= 1
            context.abort(self.code, "backend told to fail")

    def unary_unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._enter(context)
        return b"echo:" + request

    def unary_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._enter(context)
        yield b"echo:" + request

    def stream_unary(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        self._enter(context)
        return b"echo:" + b"".join(requests)

    def stream_stream(self, requests: Iterator[bytes],
                      context: grpc.ServicerContext) -> Iterator[bytes]:
        self._enter(context)
        for request in requests:
            yield b"echo:" + request

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(BACKEND, {
            "UnaryUnary": grpc.unary_unary_rpc_method_handler(self.unary_unary),
            "UnaryStream": grpc.unary_stream_rpc_method_handler(self.unary_stream),
            "StreamUnary": grpc.stream_unary_rpc_method_handler(self.stream_unary),
            "StreamStream": grpc.stream_stream_rpc_method_handler(self.stream_stream),
        })


def call_every_kind(channel: grpc.Channel, service: str = BACKEND,
                    **kwargs: Any) -> list[Any]:
    """One call of each kind on a sync channel; the answers."""
    return [
        channel.unary_unary(f"/{service}/UnaryUnary")(b"a", **kwargs),
        list(channel.unary_stream(f"/{service}/UnaryStream")(b"b", **kwargs)),
        channel.stream_unary(f"/{service}/StreamUnary")(iter([b"c", b"d"]), **kwargs),
        list(channel.stream_stream(f"/{service}/StreamStream")(iter([b"e"]), **kwargs)),
    ]


async def acall_every_kind(channel: grpc.aio.Channel, service: str = BACKEND,
                           **kwargs: Any) -> list[Any]:
    """One call of each kind on a grpc.aio channel; the answers."""

    async def requests(*items: bytes) -> AsyncIterator[bytes]:
        for item in items:
            yield item

    return [
        await channel.unary_unary(f"/{service}/UnaryUnary")(b"a", **kwargs),
        [r async for r in channel.unary_stream(f"/{service}/UnaryStream")(b"b", **kwargs)],
        await channel.stream_unary(f"/{service}/StreamUnary")(requests(b"c", b"d"), **kwargs),
        [r async for r in channel.stream_stream(f"/{service}/StreamStream")(
            requests(b"e"), **kwargs)],
    ]
