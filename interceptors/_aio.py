"""``aio_interceptors``: hand grpc.aio interceptors that cover several call kinds.

``grpc.aio.Channel`` files each interceptor under the *first* kind it implements (an
``if``/``elif`` chain; https://github.com/grpc/grpc/issues/31442), so one object
implementing unary-unary and unary-stream silently never sees streaming calls.
:func:`aio_interceptors` hands grpc one single-kind adapter per kind instead.

Example::

    channel = grpc.aio.insecure_channel(address, interceptors=aio_interceptors(
        AioDeadlineClientInterceptor(), AioRetryClientInterceptor(meshlib.Retry())))
"""

from __future__ import annotations

from typing import Any

import grpc

__all__ = ["aio_interceptors"]


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, of: Any) -> None:
        self.of = of

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any,
                                    request: Any) -> Any:
        return await self.of.intercept_unary_unary(continuation, client_call_details, request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, of: Any) -> None:
        self.of = of

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any,
                                     request: Any) -> Any:
        return await self.of.intercept_unary_stream(continuation, client_call_details, request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, of: Any) -> None:
        self.of = of

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                                     request_iterator: Any) -> Any:
        return await self.of.intercept_stream_unary(continuation, client_call_details,
                                                    request_iterator)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, of: Any) -> None:
        self.of = of

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any,
                                      request_iterator: Any) -> Any:
        return await self.of.intercept_stream_stream(continuation, client_call_details,
                                                     request_iterator)


_KINDS: tuple[tuple[type, type], ...] = (
    (grpc.aio.UnaryUnaryClientInterceptor, _UnaryUnary),
    (grpc.aio.UnaryStreamClientInterceptor, _UnaryStream),
    (grpc.aio.StreamUnaryClientInterceptor, _StreamUnary),
    (grpc.aio.StreamStreamClientInterceptor, _StreamStream),
)


def aio_interceptors(*interceptors: grpc.aio.ClientInterceptor
                     ) -> list[grpc.aio.ClientInterceptor]:
    """``interceptors`` for ``grpc.aio.insecure_channel(..., interceptors=...)``, in
    order, each interceptor that implements several call kinds split into one
    single-kind adapter per kind (so grpc.aio applies it to every kind it covers).

    Example::

        grpc.aio.insecure_channel(address,
                                  interceptors=aio_interceptors(AioDeadlineClientInterceptor()))
    """
    handed: list[grpc.aio.ClientInterceptor] = []
    for interceptor in interceptors:
        adapters = [adapter for kind, adapter in _KINDS if isinstance(interceptor, kind)]
        if len(adapters) <= 1:
            handed.append(interceptor)
        else:
            handed.extend(adapter(interceptor) for adapter in adapters)
    return handed
