"""The one call pipeline: every decision a mesh call makes, with no I/O.

A :class:`Call` is one routed call from start to outcome::

    route ─► fault (delay, abort) ─► cluster by weight ─► budget ─► telemetry record
      └─► attempt: pick endpoint (balancer, breaker, limits) ─► [driver does the I/O]
            ├─ succeeded ─► release ─► done
            └─ failed ─► release (outlier, breaker) ─► retry engine: wait s, or give up

Four thin drivers step through it and do only I/O and waiting: the grpc sync channel
(:mod:`meshlib._channel`), the grpc.aio channel (:mod:`meshlib._aio_channel`) and the
httpx sync and async transports (:mod:`meshlib._http`). A driver's loop::

    call = Call(table, method, metadata, timeout, telemetry, method, clock)
    if call.delay:
        sleep(call.delay)                    # an injected fault delay
        call.start()
    if call.aborted is not None:
        raise call.aborted                   # an injected abort
    while True:
        endpoint = call.pick()
        try:
            result = send(endpoint, call.attempt_timeout, call.attempt_headers)
        except grpc.RpcError as err:
            wait = call.failed_rpc(endpoint, err)
            if wait is None:
                call.give_up(err)           # RetryExhaustedError, or err itself
            sleep(wait)
            continue
        call.succeeded(endpoint)
        return result

Retries follow the route's policy from the control plane (gRFC A44) through meshlib's
one retry engine (:class:`~meshlib.resilience.RetryRun`), which is built only after a
first retryable failure; inside a :func:`meshlib.retry` decorator a call makes one
attempt (the decorator owns the retries). Timeouts: the call's is the smallest of the
caller's, the route's (gRFC A31 ``max_stream_duration``) and what is left of a
propagated deadline; each attempt gets ``min(per_try_timeout, time left)``. Faults
follow gRFC A33: a delay on ``delay_percent`` % of calls, then an abort with the
configured code on ``abort_percent`` %.

A :class:`Call` is one slotted object per call (the whole pipeline, sync, with
telemetry off: ~2.6 µs a call, ``benchmarks/ab_bench.py``'s "pipeline" rows); the
routing table and the policies it reads are immutable and decoded once per
configuration update.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from meshlib._cluster_state import ClusterState, EndpointState
from meshlib._route_table import Metadata, RouteRetry, RouteTable
from meshlib.errors import (
    CallError,
    DeadlineExceededError,
    NoHealthyEndpointError,
    ServiceNotFoundError,
    status_code,
)
from meshlib.resilience import DEADLINE, RETRIES_OWNED, RetryRun, cap_timeout
from meshlib.xds import FaultConfig

if TYPE_CHECKING:
    from meshlib._resolver import Target
    from meshlib.telemetry import ClientTelemetry, Record

__all__ = [
    "HTTP_TO_GRPC",
    "Call",
    "byte_counting",
    "code_name",
    "count_raw",
    "fault_abort",
    "fault_delay",
    "resolve_failure",
]

_CANCELLED = grpc.StatusCode.CANCELLED
_random = random.random
_deadline = DEADLINE.get

#: The gRPC code of an HTTP status, as gRPC maps them (and Envoy's fault filter).
HTTP_TO_GRPC = {400: grpc.StatusCode.INTERNAL, 401: grpc.StatusCode.UNAUTHENTICATED,
                403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.UNIMPLEMENTED,
                429: grpc.StatusCode.UNAVAILABLE, 502: grpc.StatusCode.UNAVAILABLE,
                503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.UNAVAILABLE}


def resolve_failure(target: Target, waited: float, xds_address: str) -> CallError:
    """The error for a call whose target has no table after waiting ``waited`` s."""
    if target.status == "not_found":
        return ServiceNotFoundError(
            f"{target.name}: no such service in the mesh ({target.error}); check the "
            "name, the namespace, and the Service object", service=target.name)
    why = target.error or f"no configuration from the control plane at {xds_address} " \
                          f"within {waited:.1f}s"
    return NoHealthyEndpointError(f"{target.name}: {why}", service=target.name)


def code_name(error: BaseException | None) -> str:
    """The gRPC code name of a call's outcome (None: OK; not an RPC error: the
    caller gave up, CANCELLED)."""
    if error is None:
        return "OK"
    code = status_code(error)
    return code.name if code is not None else "CANCELLED"


def fault_delay(fault: FaultConfig) -> float:
    """Seconds to delay this call (0 for most)."""
    if fault.delay and fault.delay_percent and _random() * 100 < fault.delay_percent:
        return fault.delay
    return 0.0


def fault_abort(fault: FaultConfig, target: str) -> CallError | None:
    """The error to fail this call with, when the abort fault fires."""
    if not fault.abort_percent or _random() * 100 >= fault.abort_percent:
        return None
    code = fault.abort_grpc_status or HTTP_TO_GRPC.get(fault.abort_http_status or 0,
                                                       grpc.StatusCode.UNKNOWN)
    return CallError(f"{target}: RPC terminated due to fault injection", service=target,
                     code=code)


def byte_counting(telemetry: ClientTelemetry | None, target: str, method: str, kind: str,
                  ser: Any, deser: Any) -> tuple[Any, Any, tuple[Any, Any] | None]:
    """A multicallable's (serializer, deserializer, inline counters): raw-bytes unary
    calls are counted inline (:func:`count_raw`: no serializer callback into Python);
    the others through counting (de)serializers."""
    if telemetry is None:
        return ser, deser, None
    counters = telemetry.metrics.byte_counters("client", target, method)
    if ser is None and deser is None and kind == "unary_unary":
        return ser, deser, counters
    return (*telemetry.metrics.counting_codec(ser, deser, *counters), None)


def count_raw(counters: tuple[Any, Any] | None, request: Any, response: Any) -> None:
    """Count a raw-bytes unary attempt's sizes (``counters`` is None when the
    serializers count instead)."""
    if counters is not None:
        if isinstance(request, bytes):
            counters[0](len(request))
        if isinstance(response, bytes):
            counters[1](len(response))


class Call:
    """One routed call's decisions, from route to outcome; see the module docstring.

    ``Call(...)`` routes (raising :class:`~meshlib.CallError` UNAVAILABLE when no route
    matches, :class:`~meshlib.DeadlineExceededError` when a propagated deadline has
    passed) and, unless a fault delays the call (then :attr:`delay` is set and the
    driver calls :meth:`start` after waiting it), starts it: the fault abort (then
    :attr:`aborted` is the error and the call stops there), the cluster by weight, the
    retry budget's request count, the telemetry record (``label`` names the call: the
    gRPC method or HTTP method; ``headers`` go to the attempts, default: the call's
    metadata) and the deadline. ``retry=False`` makes one attempt whatever the route
    says (calls whose requests cannot be replayed).

    Each :meth:`pick` sets :attr:`attempt_timeout` and :attr:`attempt_headers` for the
    attempt it starts: the per-try timeout capped by what is left of the call's
    deadline, and what to send (the trace context of the attempt added).
    """

    cluster: ClusterState
    deadline: float | None
    hash_key: str | None
    attempt_timeout: float | None
    attempt_headers: Metadata

    __slots__ = ("_clock", "_pending", "aborted", "attempt_headers", "attempt_timeout",
                 "cluster", "deadline", "delay", "entry", "hash_key", "metadata", "record",
                 "retry", "run", "sent", "table", "timeout")

    def __init__(self, table: RouteTable, path: str, metadata: Metadata,
                 timeout: float | None, telemetry: ClientTelemetry | None, label: str,
                 clock: Callable[[], float] = time.monotonic, retry: bool = True,
                 protocol: str = "grpc", headers: Metadata = None) -> None:
        entry = self.entry = table.route(path, metadata)
        self.table = table
        self.metadata = metadata
        self._clock = clock
        route_timeout = entry.timeout
        if route_timeout is not None and (timeout is None or route_timeout < timeout):
            timeout = route_timeout
        deadline = _deadline()
        if deadline is not None:
            timeout = cap_timeout(timeout, deadline, clock(), what=table.target)
        self.timeout = timeout
        self.retry: RouteRetry | None = entry.retry if retry else None
        self.run: RetryRun | None = None
        self.record: Record | None = None
        self.aborted: CallError | None = None
        if entry.fault is not None:
            self.delay = fault_delay(entry.fault)
            if self.delay:
                if timeout is not None and self.delay > timeout:
                    # The deadline fires during the delay (gRFC A33), not after it.
                    self.delay = max(timeout, 0.0)
                self._pending = (telemetry, label, protocol, headers)
                return  # the driver waits, then start()s
        else:
            self.delay = 0.0
        self._start(telemetry, label, protocol, headers)

    def start(self) -> None:
        """Start the call after its fault :attr:`delay` (see the class docstring)."""
        self._start(*self._pending)

    def _start(self, telemetry: ClientTelemetry | None, label: str, protocol: str,
               headers: Metadata) -> None:
        entry = self.entry
        timeout = self.timeout
        fault = entry.fault
        if fault is not None:
            target = self.table.target
            if self.delay and timeout is not None:
                if timeout - self.delay <= 0:
                    raise DeadlineExceededError(
                        f"{target}: an injected fault delay used up the {timeout:.3f}s "
                        "timeout", service=target)
                timeout = self.timeout = timeout - self.delay
            self.aborted = fault_abort(fault, target)
            if self.aborted is not None:
                return
        cluster = self.cluster = entry.pick_cluster()
        cluster.budget.record_request()
        sent = self.sent = self.metadata if headers is None else headers
        if telemetry is not None:
            table = self.table
            self.record = telemetry.start(table.target, entry.route.name, cluster.service,
                                          label, sent, table.sampling, table.access_log,
                                          protocol)
        self.hash_key = entry.hash_key(self.metadata) if entry.hash_headers else None
        retry = self.retry
        if retry is not None:
            if RETRIES_OWNED.get():
                self.retry = None
            else:  # the deadline the retries share, and the first try's timeout
                self.deadline = None if timeout is None else self._clock() + timeout
                per_try = retry.per_try_timeout
                self.attempt_timeout = timeout if per_try is None or (
                    timeout is not None and timeout < per_try) else per_try
                return
        self.deadline = None  # one attempt: its timeout is the call's
        self.attempt_timeout = timeout

    # ------------------------------------------------------------ attempts

    def pick(self) -> EndpointState:
        """The next attempt's endpoint, counted in flight, with its
        :attr:`attempt_timeout` and :attr:`attempt_headers`; raises
        :class:`~meshlib.NoHealthyEndpointError` or :class:`~meshlib.CircuitOpenError`
        (never retried: the call ends with them)."""
        endpoint = self.cluster.pick(self.hash_key)
        if self.run is not None:  # a retry: what is left of the deadline
            retry = self.retry
            self.attempt_timeout = cap_timeout(
                retry.per_try_timeout if retry is not None else None, self.deadline,
                self._clock(), expired=False)
        record = self.record
        self.attempt_headers = self.sent if record is None else record.attempt(endpoint)
        return endpoint

    def succeeded(self, endpoint: EndpointState, label: str = "OK",
                  response_bytes: int | None = None) -> None:
        """The attempt on ``endpoint`` answered: the call's outcome (``label``: its
        code or status for telemetry; ``response_bytes`` when known)."""
        self.cluster.release(endpoint, None)
        record = self.record
        if record is not None:
            record.attempt_end(label, False)
            record.finish(label, False, response_bytes=response_bytes)

    def failed(self, endpoint: EndpointState, code: grpc.StatusCode, error: BaseException,
               label: str) -> float | None:
        """The attempt on ``endpoint`` failed with ``code`` (``error`` is what the retry
        rules judge): seconds to wait before the next attempt, or None when the call
        ends with this failure."""
        self.cluster.release(endpoint, code, error)
        record = self.record
        if record is not None:
            record.attempt_end(label, True)
        return self._next_wait(error)

    def _next_wait(self, error: BaseException) -> float | None:
        retry = self.retry
        if retry is None:
            return None
        run = self.run
        if run is None:  # a first failure: the retry engine (no tenacity yet)
            run = self.run = RetryRun(retry, name=self.cluster.service, clock=self._clock,
                                      deadline=self.deadline, budget=self.cluster.budget)
        return run.next_wait(error)

    def failed_rpc(self, endpoint: EndpointState, error: grpc.RpcError) -> float | None:
        """:meth:`failed` for a gRPC attempt that raised ``error``."""
        code = status_code(error) or grpc.StatusCode.UNKNOWN
        return self.failed(endpoint, code, error, code.name)

    def cancelled(self, endpoint: EndpointState, label: str = "CANCELLED") -> None:
        """The attempt on ``endpoint`` ended without an outcome (the caller gave up, or
        the driver failed): released, counted against nothing."""
        self.cluster.release(endpoint, _CANCELLED)
        record = self.record
        if record is not None:
            record.attempt_end(label, True)

    def final(self, error: BaseException) -> BaseException:
        """What the call raises when it ends with ``error``: see
        :meth:`~meshlib.resilience.RetryRun.final`."""
        run = self.run
        return error if run is None else run.final(error)

    def give_up(self, error: BaseException) -> NoReturn:
        """Raise what the call raises when it ends with ``error`` (:meth:`final`)."""
        if self.run is not None:
            self.run.give_up(error)
        raise error

    # ------------------------------------------------------------ streams

    def open(self, start: Callable[[EndpointState], Any],
             on_end: Callable[[Call, EndpointState, Any], Callable[[Any], None]]) -> Any:
        """Pick an endpoint and start a call there that reports its own end: ``start``
        returns the call, ``on_end(self, endpoint, call)`` its done callback (which
        ends with :meth:`stream_ended`). A call refused before it starts (no endpoint,
        breaker open) is recorded as failed; one that cannot even start is released at
        once."""
        try:
            endpoint = self.pick()
        except BaseException as err:
            self.finish(err)
            raise
        try:
            rpc = start(endpoint)
        except BaseException:
            self.cancelled(endpoint)
            raise
        rpc.add_done_callback(on_end(self, endpoint, rpc))
        return rpc

    def stream_ended(self, endpoint: EndpointState, code: grpc.StatusCode | None) -> None:
        """A streaming (or ``future``) attempt ended with ``code``: released, and — as
        it is the call's one attempt — the call recorded too."""
        ok = code is grpc.StatusCode.OK
        self.cluster.release(endpoint, None if ok else code)
        record = self.record
        if record is not None:
            name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
            record.attempt_end(name, not ok)
            record.finish(name, not ok)

    def retry_stream(self, error: BaseException) -> float | None:
        """A streaming attempt failed before its first response message: seconds to
        wait before starting it again, or None (the attempt's end was recorded by
        :meth:`stream_ended`)."""
        return self._next_wait(error)

    # ------------------------------------------------------------ the end

    def finish(self, outcome: BaseException | str, response_bytes: int | None = None) -> None:
        """The call failed: with an error (named by its gRPC code), or with ``outcome``
        as telemetry names it (an HTTP status, an exception's type). A success ends in
        :meth:`succeeded`."""
        record = self.record
        if record is not None:
            record.finish(outcome if isinstance(outcome, str) else code_name(outcome), True,
                          response_bytes=response_bytes)
