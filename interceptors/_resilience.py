"""Retries and circuit breaking as client interceptors, for plain channels to services
outside the mesh (mesh channels have both built in).

Example::

    channel = grpc.intercept_channel(
        grpc.insecure_channel("payments.example.com:443"),
        RetryClientInterceptor(meshlib.Retry(attempts=3)),
        CircuitBreakerClientInterceptor(meshlib.CircuitBreaker(failures=5)),
    )
"""

from __future__ import annotations

from typing import Any

import grpc

from meshlib.resilience import CircuitBreaker, Retry, acall_with_retry, call_with_retry

__all__ = [
    "AioCircuitBreakerClientInterceptor",
    "AioRetryClientInterceptor",
    "CircuitBreakerClientInterceptor",
    "RetryClientInterceptor",
]


def _result(outcome: Any) -> Any:
    """A sync interceptor's continuation returns a call that holds the error instead of
    raising it; raise it, so the policy sees it."""
    outcome.result()
    return outcome


class RetryClientInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Retry unary calls under ``policy`` (tenacity; budget honoured)."""

    def __init__(self, policy: Retry, *, sleep: Any = None) -> None:
        self.policy = policy
        self._sleep = sleep

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        def attempt() -> Any:
            return _result(continuation(details, request))
        return call_with_retry(self.policy, attempt, (), {}, sleep=self._sleep,
                               name=details.method)


class CircuitBreakerClientInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Fail unary calls fast with ``CircuitOpenError`` while ``breaker`` is open."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return self.breaker.call(lambda: _result(continuation(details, request)))


class AioRetryClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """``grpc.aio``: retry unary calls under ``policy``."""

    def __init__(self, policy: Retry, *, sleep: Any = None) -> None:
        self.policy = policy
        self._sleep = sleep

    async def intercept_unary_unary(self, continuation: Any, details: Any,
                                    request: Any) -> Any:
        async def attempt() -> Any:
            call = await continuation(details, request)
            await call  # raises the call's error
            return call
        return await acall_with_retry(self.policy, attempt, (), {}, sleep=self._sleep,
                                      name=details.method)


class AioCircuitBreakerClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """``grpc.aio``: fail unary calls fast while ``breaker`` is open."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    async def intercept_unary_unary(self, continuation: Any, details: Any,
                                    request: Any) -> Any:
        async def attempt() -> Any:
            call = await continuation(details, request)
            await call
            return call
        return await self.breaker.acall(attempt)
