"""Per-call decisions shared by the sync and the asyncio channels.

Everything here is plain computation on the route's already-decoded policies; the two
channel drivers only differ in how they wait and call. Retries after the first
attempt are driven by tenacity (``Retrying`` / ``AsyncRetrying``), built only once a
call has failed with a retryable code — the success path never constructs a policy.

* Timeout: the smallest of the caller's ``timeout``, the route's timeout (gRFC A31
  ``max_stream_duration``) and what is left of a propagated deadline
  (:mod:`meshlib._deadline`). Each attempt gets ``min(per_try_timeout, time left)``.
* Retries (gRFC A44 semantics): on the route's ``retry_on`` codes, at most
  ``num_retries`` more attempts, waiting a random time in ``[0, base × 2^n]`` capped at
  ``max_interval`` (tenacity's ``wait_random_exponential``, gRFC A6 full jitter), never
  past the deadline, and only while the cluster's retry budget allows. Inside a
  :func:`meshlib.retry` decorator the channel makes one attempt: the decorator owns
  the retries.
* Fault injection (gRFC A33): a delay on ``delay_percent`` % of calls, then an abort
  with the configured code on ``abort_percent`` %.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import tenacity

from meshlib._cluster_state import ClusterState
from meshlib._deadline import _DEADLINE
from meshlib.errors import (
    CallError,
    CircuitOpenError,
    DeadlineExceededError,
    NoHealthyEndpointError,
    RetryExhaustedError,
)
from meshlib.resilience._retry import BudgetStop
from meshlib.xds import FaultConfig, RetryPolicy

__all__ = [
    "after_delay",
    "aretry_after",
    "attempt_timeout",
    "call_timeout",
    "exhausted",
    "fault_abort",
    "fault_delay",
    "retry_after",
    "retry_kwargs",
    "retryable",
    "rpc_code",
]

_T = TypeVar("_T")
_LOCAL_REFUSALS = (CircuitOpenError, NoHealthyEndpointError)
_monotonic = time.monotonic
_HTTP_TO_GRPC = {400: grpc.StatusCode.INTERNAL, 401: grpc.StatusCode.UNAUTHENTICATED,
                 403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.UNIMPLEMENTED,
                 429: grpc.StatusCode.UNAVAILABLE, 502: grpc.StatusCode.UNAVAILABLE,
                 503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.UNAVAILABLE}


def call_timeout(timeout: float | None, route_timeout: float | None, target: str
                 ) -> float | None:
    """The call's timeout in seconds, or None; raises when a propagated deadline has
    already passed."""
    if route_timeout is not None and (timeout is None or route_timeout < timeout):
        timeout = route_timeout
    deadline = _DEADLINE.get()
    if deadline is not None:
        left = deadline - _monotonic()
        if left <= 0:
            raise DeadlineExceededError(
                f"{target}: the propagated deadline passed {-left:.3f}s before the call",
                service=target)
        if timeout is None or left < timeout:
            timeout = left
    return timeout


def retryable(error: BaseException, policy: RetryPolicy | None) -> bool:
    """Whether ``error`` is worth another attempt under ``policy``: a ``retry_on`` code,
    and not one of meshlib's own refusals (open circuit, limit, no endpoint), which
    backing off and asking again would only turn into spent budget under overload."""
    return (policy is not None and rpc_code(error) in policy.retry_on
            and not isinstance(error, _LOCAL_REFUSALS))


def after_delay(timeout: float | None, delay: float, target: str) -> float | None:
    """What is left of ``timeout`` after an injected ``delay``."""
    if timeout is None:
        return None
    if timeout - delay <= 0:
        raise DeadlineExceededError(f"{target}: the injected {delay:.3f}s delay used up the "
                                    f"{timeout:.3f}s timeout", service=target)
    return timeout - delay


def attempt_timeout(per_try: float | None, deadline: float | None) -> float | None:
    """One attempt's timeout: the per-try timeout, capped by the call's deadline."""
    if deadline is None:
        return per_try
    left = deadline - _monotonic()
    if left <= 0:
        return 0.0
    return left if per_try is None or left < per_try else per_try


def rpc_code(error: BaseException) -> grpc.StatusCode | None:
    """The status code of a failed attempt (None if it is not an RPC error)."""
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        code = error.code()
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    return None


def fault_delay(fault: FaultConfig) -> float:
    """Seconds to delay this call (0 for most)."""
    if fault.delay and fault.delay_percent and random.random() * 100 < fault.delay_percent:
        return fault.delay
    return 0.0


def fault_abort(fault: FaultConfig, target: str) -> CallError | None:
    """The error to fail this call with, when the abort fault fires."""
    if not fault.abort_percent or random.random() * 100 >= fault.abort_percent:
        return None
    code = fault.abort_grpc_status or _HTTP_TO_GRPC.get(fault.abort_http_status or 0,
                                                        grpc.StatusCode.UNKNOWN)
    return CallError(f"{target}: RPC terminated due to fault injection", service=target,
                     code=code)


class _DeadlineStop(tenacity.stop.stop_base):
    """Stop when the next wait would end past the call's deadline."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        if self.deadline is None:
            return False
        return _monotonic() + (retry_state.upcoming_sleep or 0.0) >= self.deadline


def retry_kwargs(policy: RetryPolicy, cluster: ClusterState, deadline: float | None,
                 sleep: Callable[[float], Any] | None) -> dict[str, Any]:
    """tenacity arguments for the attempts after a first retryable failure.

    The first "attempt" tenacity runs re-raises that first failure, so its stop, wait
    and budget rules apply to every retry alike.
    """
    kwargs: dict[str, Any] = {
        "stop": tenacity.stop_any(tenacity.stop_after_attempt(1 + policy.num_retries),
                                  _DeadlineStop(deadline), BudgetStop(cluster.budget)),
        "wait": tenacity.wait_random_exponential(multiplier=policy.base_interval,
                                                 max=policy.max_interval),
        "retry": tenacity.retry_if_exception(lambda e: retryable(e, policy)),
        "reraise": True,
    }
    if sleep is not None:
        kwargs["sleep"] = sleep
    return kwargs


def exhausted(error: BaseException, attempts: int, allowed: int,
              service: str) -> BaseException:
    """What a failed call raises: a :class:`RetryExhaustedError` carrying the last error
    (still a ``grpc.RpcError`` with its code) when every allowed attempt was made and
    failed; otherwise — not retryable, or stopped early by the budget or the deadline —
    the last error itself, as the decorators do."""
    if attempts < allowed or attempts <= 1:
        return error
    code = rpc_code(error)
    return RetryExhaustedError(
        f"{service}: {attempts} attempts failed, last with "
        f"{code.name if code else type(error).__name__}", attempts=attempts,
        last_error=error, service=service)


def retry_after(first: BaseException, again: Callable[[], _T], policy: RetryPolicy,
                cluster: ClusterState, deadline: float | None,
                sleep: Callable[[float], Any] | None) -> _T:
    """Retry a call whose first attempt failed with ``first``: tenacity runs ``again``
    for each further attempt under ``policy``; raises what :func:`exhausted` says."""
    attempts = 0

    def attempt() -> _T:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise first  # replay the first failure through tenacity's rules
        return again()

    try:
        return tenacity.Retrying(**retry_kwargs(policy, cluster, deadline, sleep))(attempt)
    except grpc.RpcError as err:
        final = exhausted(err, attempts, 1 + policy.num_retries, cluster.service)
        if final is err:
            raise
        raise final from err


async def aretry_after(first: BaseException, again: Callable[[], Awaitable[_T]],
                       policy: RetryPolicy, cluster: ClusterState,
                       deadline: float | None) -> _T:
    """:func:`retry_after` for coroutines, under tenacity's ``AsyncRetrying``."""
    attempts = 0

    async def attempt() -> _T:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise first
        return await again()

    try:
        return await tenacity.AsyncRetrying(
            **retry_kwargs(policy, cluster, deadline, None))(attempt)
    except grpc.RpcError as err:
        final = exhausted(err, attempts, 1 + policy.num_retries, cluster.service)
        if final is err:
            raise
        raise final from err
