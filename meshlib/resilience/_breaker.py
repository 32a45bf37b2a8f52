"""``CircuitBreaker`` — pybreaker's state machine with an injectable clock and a split
``admit``/``record`` API for calls whose outcome arrives later (RPCs, streams) — and
the ``@circuit_breaker`` decorator.

pybreaker compares ``datetime.now(UTC)`` with the time the circuit opened and cannot
take a clock. :class:`_ClockStorage` (a ``pybreaker.CircuitBreakerStorage``) keeps the
open time on the injected monotonic ``clock`` and hands pybreaker a datetime that is
``clock() - opened`` seconds before ``now``, so pybreaker's own timeout comparison runs
on the injected clock and tests advance a fake clock instead of sleeping.

Hot path: the storage keeps two plain flags (``closed``; ``quiet`` = closed with no
failure counted) current on every state change, so a closed breaker's
:meth:`CircuitBreaker.admit` and a quiet breaker's ``record(None)`` are one attribute
read each, without a lock or a pybreaker call. The flags are read without the lock: a
call that races the trip may still be admitted, which is harmless.

Example::

    breaker = CircuitBreaker(failures=5, reset_timeout=30)
    breaker.call(stub.Get, request)          # or: breaker.admit(); ...; breaker.record(err)
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import grpc
import pybreaker

from meshlib.contract import (
    DEFAULT_BREAKER_FAILURES,
    DEFAULT_BREAKER_HALF_OPEN_PROBES,
    DEFAULT_BREAKER_OPEN_DURATION,
)
from meshlib.errors import CircuitOpenError
from meshlib.resilience._clock import Clock, callable_name

__all__ = ["FAILURE_CODES", "CircuitBreaker", "State", "circuit_breaker", "is_failure"]

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])
State = Literal["closed", "open", "half-open"]

_CLOSED, _OPEN, _HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN

# Codes that say the callee failed, not the request (Envoy counts 5xx and gateway
# timeouts the same way): they count against a breaker and toward outlier ejection.
FAILURE_CODES: frozenset[grpc.StatusCode] = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS, grpc.StatusCode.DEADLINE_EXCEEDED,
})


def is_failure(error: BaseException) -> bool:
    """The default failure test: a gRPC error with a :data:`FAILURE_CODES` code, or any
    other ``Exception``. (A gRPC error with another code — INVALID_ARGUMENT,
    NOT_FOUND, ... — means the service answered: it counts as a success.)"""
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return error.code() in FAILURE_CODES
    return isinstance(error, Exception)


_default_is_failure = is_failure


class _ClockStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker's state, counters and open time, with time from ``clock``."""

    def __init__(self, clock: Clock) -> None:
        super().__init__("meshlib")
        self._clock = clock
        self._state = _CLOSED
        self._failures = 0
        self._successes = 0
        self.opened_clock: float | None = None
        self.closed = True  # hot-path flags, see the module docstring
        self.quiet = True

    def _flags(self) -> None:
        self.closed = self._state == _CLOSED
        self.quiet = self.closed and not self._failures

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        self._state = state
        self._flags()

    def increment_counter(self) -> None:
        self._failures += 1
        self.quiet = False

    def reset_counter(self) -> None:
        self._failures = 0
        self._flags()

    def increment_success_counter(self) -> None:
        self._successes += 1

    def reset_success_counter(self) -> None:
        self._successes = 0

    @property
    def counter(self) -> int:
        return self._failures

    @property
    def success_counter(self) -> int:
        return self._successes

    @property
    def opened_at(self) -> datetime | None:
        if self.opened_clock is None:
            return None
        return datetime.now(UTC) - timedelta(seconds=self._clock() - self.opened_clock)

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:  # pybreaker passes the wall time
        self.opened_clock = self._clock()


def _succeed() -> None:
    return None


def _fail(error: BaseException) -> None:
    raise error


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; after ``reset_timeout`` seconds
    lets ``half_open_probes`` calls through at a time, and closes on a success or
    opens again (for another ``reset_timeout``) on a failure.

    ``is_failure`` decides what counts (default :func:`is_failure`); other errors
    count as successes, like pybreaker's ``exclude``. Share one object to share the
    state (e.g. one breaker for "the payments dependency" across functions).

    Example::

        breaker = CircuitBreaker(failures=3, reset_timeout=10, name="payments")
        breaker.admit()                  # raises CircuitOpenError while open
        try:
            reply = stub.Charge(request)
        except grpc.RpcError as err:
            breaker.record(err)
            raise
        breaker.record(None)

    A probe whose outcome is never recorded (nor :meth:`release`\\ d) is presumed lost
    after ``reset_timeout``, so a leaked probe cannot hold the circuit half-open
    forever. An outcome arriving while the circuit is open (a call admitted before it
    tripped) is ignored.
    """

    def __init__(self, failures: int = DEFAULT_BREAKER_FAILURES,
                 reset_timeout: float = DEFAULT_BREAKER_OPEN_DURATION,
                 half_open_probes: int = DEFAULT_BREAKER_HALF_OPEN_PROBES, *,
                 is_failure: Callable[[BaseException], bool] | None = None,
                 clock: Clock = time.monotonic, name: str = "") -> None:
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures}")
        if reset_timeout < 0:
            raise ValueError(f"reset_timeout must be >= 0, got {reset_timeout}")
        if half_open_probes < 1:
            raise ValueError(f"half_open_probes must be >= 1, got {half_open_probes}")
        failure = _default_is_failure if is_failure is None else is_failure
        self.name = name
        self.half_open_probes = half_open_probes
        self.reset_timeout = float(reset_timeout)
        self._clock = clock
        self._storage = _ClockStorage(clock)
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=failures, reset_timeout=reset_timeout, state_storage=self._storage,
            exclude=[lambda e: not failure(e)], name=name or None,
            throw_new_error_on_trip=False)
        self._probes = 0  # half-open probes in flight
        self._probe_expiry = 0.0
        self._lock = threading.Lock()

    @property
    def failures(self) -> int:
        """The number of consecutive failures that opens the circuit."""
        return self._breaker.fail_max

    @property
    def consecutive_failures(self) -> int:
        """Consecutive failures counted so far."""
        return self._storage.counter

    @property
    def state(self) -> State:
        """``closed``, ``open`` or ``half-open`` (open with its reset timeout over
        reads as half-open: the next call is a probe)."""
        state = self._storage.state
        if state == _OPEN:
            return "half-open" if self._open_left(self._clock()) <= 0 else "open"
        return "half-open" if state == _HALF_OPEN else "closed"

    def _open_left(self, now: float) -> float:
        opened = self._storage.opened_clock
        return 0.0 if opened is None else self.reset_timeout - (now - opened)

    def admit(self) -> None:
        """Let a call through (a probe when half-open), or raise
        :class:`~meshlib.CircuitOpenError`. Every admitted call must end in
        :meth:`record` (or :meth:`release`)."""
        if self._storage.closed:
            return
        self._admit()

    def _admit(self) -> None:
        with self._lock:
            state = self._storage.state
            if state == _CLOSED:
                return
            now = self._clock()
            if state == _OPEN:
                left = self._open_left(now)
                if left > 0:
                    raise CircuitOpenError(
                        f"circuit open{self._label()} after {self._storage.counter} "
                        f"consecutive failure(s); next probe in {left:.1f}s",
                        service=self.name)
                self._breaker.half_open()
                self._probes = 0
            elif self._probes >= self.half_open_probes:
                if now < self._probe_expiry:
                    raise CircuitOpenError(
                        f"circuit half-open{self._label()}: {self._probes} probe(s) in "
                        "flight", service=self.name)
                self._probes = 0  # their outcomes never came: presumed lost
            self._probes += 1
            self._probe_expiry = now + self.reset_timeout

    def record(self, error: BaseException | None) -> None:
        """The outcome of an admitted call: None for success, else its error. A
        ``BaseException`` that is not an ``Exception`` (cancellation, interrupt) is
        no outcome: it is :meth:`release`\\ d."""
        if error is None and self._storage.quiet:
            return
        if error is not None and not isinstance(error, Exception):
            self.release()
            return
        with self._lock:
            state = self._storage.state
            if state == _OPEN:
                return  # admitted before the trip: too late to count
            if state == _HALF_OPEN and self._probes:
                self._probes -= 1
            if error is None:
                self._breaker.call(_succeed)
                return
            try:
                self._breaker.call(_fail, error)
            except BaseException as raised:  # pybreaker re-raises what it was fed
                if raised is not error:
                    raise

    def release(self) -> None:
        """An admitted call ended without an outcome (cancelled, or never sent): free
        its half-open probe slot; nothing is counted."""
        if self._storage.closed:
            return
        with self._lock:
            if self._storage.state == _HALF_OPEN and self._probes:
                self._probes -= 1

    def call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run ``fn(*args, **kwargs)`` under the breaker: admit, run, record."""
        self.admit()
        try:
            result = fn(*args, **kwargs)
        except BaseException as err:
            self.record(err)
            raise
        self.record(None)
        return result

    async def acall(self, fn: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
        """Await ``fn(*args, **kwargs)`` under the breaker: admit, await, record."""
        self.admit()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as err:
            self.record(err)
            raise
        self.record(None)
        return result

    def _label(self) -> str:
        return f" for {self.name}" if self.name else ""

    def __repr__(self) -> str:
        return (f"CircuitBreaker({self.name!r}, state={self.state}, "
                f"failures={self.consecutive_failures}/{self.failures})")


def circuit_breaker(failures: int = DEFAULT_BREAKER_FAILURES,
                    reset_timeout: float = DEFAULT_BREAKER_OPEN_DURATION,
                    half_open_probes: int = DEFAULT_BREAKER_HALF_OPEN_PROBES, *,
                    breaker: CircuitBreaker | None = None,
                    clock: Clock | None = None) -> Callable[[_F], _F]:
    """Guard a sync or async function with a circuit breaker: after ``failures``
    consecutive failures, calls fail fast with :class:`~meshlib.CircuitOpenError`
    (UNAVAILABLE) until ``reset_timeout`` seconds have passed.

    Each decorated function gets its own breaker, named after it, unless ``breaker``
    is given: then that (shared) breaker is used and the other arguments are
    ignored. The breaker is available as ``fn.circuit_breaker``.

    Example::

        @circuit_breaker(failures=5, reset_timeout=30)
        async def get_reviews(request): ...
    """

    def decorate(fn: _F) -> _F:
        chosen = breaker if breaker is not None else CircuitBreaker(
            failures, reset_timeout, half_open_probes,
            clock=time.monotonic if clock is None else clock, name=callable_name(fn))
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                return await chosen.acall(fn, *args, **kwargs)
            awrapper.circuit_breaker = chosen  # type: ignore[attr-defined]
            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return chosen.call(fn, *args, **kwargs)
        wrapper.circuit_breaker = chosen  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
