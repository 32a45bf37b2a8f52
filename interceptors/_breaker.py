"""Circuit breaking as client interceptors, for plain channels to services outside the
mesh (mesh channels keep a breaker per endpoint without interceptors).

While the breaker is open, calls fail fast with :class:`meshlib.CircuitOpenError`
(UNAVAILABLE) and never reach the network. The sync interceptor covers all four call
kinds without blocking: it records each call's outcome from grpc's done callback, so
``.future()`` calls and streams stay asynchronous. The ``grpc.aio`` one covers calls
with a single response (unary-unary, stream-unary), whose outcome it awaits.

Example::

    breaker = meshlib.CircuitBreaker(failures=5, reset_timeout=30, name="payments")
    channel = grpc.intercept_channel(grpc.insecure_channel("payments.example.com:443"),
                                     CircuitBreakerClientInterceptor(breaker))
"""

from __future__ import annotations

from typing import Any

import grpc

from interceptors._outcome import settled
from meshlib.resilience import CircuitBreaker

__all__ = ["AioCircuitBreakerClientInterceptor", "CircuitBreakerClientInterceptor"]


class CircuitBreakerClientInterceptor(grpc.UnaryUnaryClientInterceptor,
                                      grpc.UnaryStreamClientInterceptor,
                                      grpc.StreamUnaryClientInterceptor,
                                      grpc.StreamStreamClientInterceptor):
    """Sync channels: every call goes through ``breaker`` (admit, then record its
    outcome when it ends).

    Example::

        channel = grpc.intercept_channel(grpc.insecure_channel(address),
                                         CircuitBreakerClientInterceptor(breaker))
    """

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    def _done(self, call: Any) -> None:
        if call.cancelled():
            self.breaker.release()
        else:
            self.breaker.record(call.exception())

    def _guard(self, continuation: Any, details: Any, request: Any) -> Any:
        self.breaker.admit()
        try:
            call = settled(continuation(details, request))
        except BaseException as err:
            self.breaker.record(err)
            raise
        call.add_done_callback(self._done)
        return call

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any,
                              request: Any) -> Any:
        return self._guard(continuation, client_call_details, request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any,
                               request: Any) -> Any:
        return self._guard(continuation, client_call_details, request)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                               request_iterator: Any) -> Any:
        return self._guard(continuation, client_call_details, request_iterator)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any,
                                request_iterator: Any) -> Any:
        return self._guard(continuation, client_call_details, request_iterator)


class AioCircuitBreakerClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor,
                                         grpc.aio.StreamUnaryClientInterceptor):
    """``grpc.aio`` channels: unary-unary and stream-unary calls go through
    ``breaker`` (hand it to grpc through :func:`~interceptors.aio_interceptors` for
    both kinds).

    Example::

        channel = grpc.aio.insecure_channel(
            address, interceptors=aio_interceptors(AioCircuitBreakerClientInterceptor(breaker)))
    """

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    async def _guard(self, continuation: Any, details: Any, request: Any) -> Any:
        async def attempt() -> Any:
            call = await continuation(details, request)
            await call  # raises the call's error
            return call

        return await self.breaker.acall(attempt)

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any,
                                    request: Any) -> Any:
        return await self._guard(continuation, client_call_details, request)

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                                     request_iterator: Any) -> Any:
        return await self._guard(continuation, client_call_details, request_iterator)
