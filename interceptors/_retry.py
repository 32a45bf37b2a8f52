"""Retries as client interceptors, for plain channels to services outside the mesh
(mesh channels retry under the control plane's policy without interceptors).

Unary-unary calls only: a request stream cannot be replayed. Attempts are driven by
tenacity through :func:`meshlib.resilience.call_with_retry` under a
:class:`meshlib.Retry` policy (its budget honoured). The call's own ``timeout`` is the
budget for all attempts together, like gRPC's native retries: each attempt gets what
is left (capped by ``per_try_timeout``), and no attempt starts after it. A sync
``.future()`` call blocks in the interceptor while its attempts run.

Example::

    channel = grpc.intercept_channel(
        grpc.insecure_channel("payments.example.com:443"),
        RetryClientInterceptor(meshlib.Retry(attempts=3)))
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import grpc

from interceptors._details import CallDetails, details_of, method_name
from interceptors._outcome import settled
from meshlib.resilience import (
    Clock,
    Retry,
    Sleep,
    acall_with_retry,
    call_with_retry,
    cap_timeout,
)

__all__ = ["AioRetryClientInterceptor", "RetryClientInterceptor"]


class _Attempts:
    """Per-attempt call details: the call's deadline shared out over its attempts."""

    __slots__ = ("clock", "deadline", "details", "per_try")

    def __init__(self, details: grpc.ClientCallDetails, per_try: float | None,
                 clock: Clock) -> None:
        self.details = details_of(details)
        self.per_try = per_try
        self.clock = clock
        timeout = self.details.timeout
        self.deadline = None if timeout is None else clock() + timeout

    def next(self) -> CallDetails:
        timeout = cap_timeout(self.per_try, self.deadline, self.clock(),
                              what=method_name(self.details))
        if timeout == self.details.timeout:
            return self.details
        return dataclasses.replace(self.details, timeout=timeout)


class RetryClientInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Sync channels: retry unary calls under ``policy``.

    ``sleep`` and ``clock`` are injectable for tests (default ``time.sleep`` and
    ``time.monotonic``).

    Example::

        channel = grpc.intercept_channel(grpc.insecure_channel(address),
                                         RetryClientInterceptor(meshlib.Retry(attempts=3)))
    """

    def __init__(self, policy: Retry, *, sleep: Sleep | None = None,
                 clock: Clock | None = None) -> None:
        self.policy = policy
        self._sleep = sleep
        self._clock = time.monotonic if clock is None else clock

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any,
                              request: Any) -> Any:
        attempts = _Attempts(client_call_details, self.policy.per_try_timeout, self._clock)

        def attempt() -> Any:
            outcome = settled(continuation(attempts.next(), request))
            outcome.result()  # the outcome holds an attempt's error: raise it for tenacity
            return outcome

        return call_with_retry(self.policy, attempt, sleep=self._sleep, clock=self._clock,
                               deadline=attempts.deadline,
                               name=method_name(client_call_details))


class AioRetryClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """``grpc.aio`` channels: retry unary calls under ``policy``.

    Example::

        channel = grpc.aio.insecure_channel(
            address, interceptors=[AioRetryClientInterceptor(meshlib.Retry(attempts=3))])
    """

    def __init__(self, policy: Retry, *, sleep: Sleep | None = None,
                 clock: Clock | None = None) -> None:
        self.policy = policy
        self._sleep = sleep
        self._clock = time.monotonic if clock is None else clock

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any,
                                    request: Any) -> Any:
        attempts = _Attempts(client_call_details, self.policy.per_try_timeout, self._clock)

        async def attempt() -> Any:
            call = await continuation(attempts.next(), request)
            await call  # raises the attempt's error
            return call

        return await acall_with_retry(self.policy, attempt, sleep=self._sleep,
                                      clock=self._clock, deadline=attempts.deadline,
                                      name=method_name(client_call_details))
