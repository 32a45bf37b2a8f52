"""``CircuitBreaker``: pybreaker's state machine, with an injectable clock and a
split admit/record API for calls whose outcome arrives later (RPCs, streams).

pybreaker compares ``datetime.now()`` with the time the circuit opened; a custom
storage maps an injected monotonic ``clock`` onto that comparison, so tests advance a
fake clock instead of sleeping. Closed with no failures, :meth:`CircuitBreaker.admit`
and :meth:`CircuitBreaker.record` (success) are two attribute reads: they sit on every
mesh call.

Example::

    breaker = CircuitBreaker(failures=5, reset_timeout=30)
    breaker.call(stub.Get, request)          # or: breaker.admit(); ...; breaker.record(err)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import grpc
import pybreaker

from meshlib.errors import CircuitOpenError

__all__ = ["FAILURE_CODES", "CircuitBreaker", "is_failure"]

_T = TypeVar("_T")
State = Literal["closed", "open", "half-open"]

# Codes that say the callee failed, not the request (Envoy counts 5xx and gateway
# timeouts the same way): they count against a breaker and toward outlier ejection.
FAILURE_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS, grpc.StatusCode.DEADLINE_EXCEEDED,
})


def is_failure(error: BaseException) -> bool:
    """The default failure test: a gRPC error with a :data:`FAILURE_CODES` code, or any
    other ``Exception``."""
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return error.code() in FAILURE_CODES
    return isinstance(error, Exception)


class _ClockStorage(pybreaker.CircuitMemoryStorage):
    """pybreaker's memory storage with time from ``clock`` instead of the wall."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self._clock = clock
        self.opened_clock: float | None = None

    @property
    def opened_at(self) -> datetime | None:
        if self.opened_clock is None:
            return None
        return datetime.now(UTC) - timedelta(seconds=self._clock() - self.opened_clock)

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self.opened_clock = self._clock()


def _succeed() -> None:
    return None


def _fail(error: BaseException) -> None:
    raise error


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; after ``reset_timeout`` seconds
    lets ``half_open_probes`` calls through, and closes on a success or opens again on
    a failure. Share one object to share the state.

    ``is_failure`` decides what counts (default :func:`is_failure`); other errors count
    as successes, as pybreaker's ``exclude``.
    """

    def __init__(self, failures: int = 5, reset_timeout: float = 30.0,
                 half_open_probes: int = 1, *,
                 is_failure: Callable[[BaseException], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic, name: str = "") -> None:
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures}")
        if reset_timeout < 0:
            raise ValueError(f"reset_timeout must be >= 0, got {reset_timeout}")
        if half_open_probes < 1:
            raise ValueError(f"half_open_probes must be >= 1, got {half_open_probes}")
        failure = is_failure or globals()["is_failure"]
        self.name = name
        self.half_open_probes = half_open_probes
        self._clock = clock
        self._storage = _ClockStorage(clock)
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=failures, reset_timeout=reset_timeout, state_storage=self._storage,
            exclude=[lambda e: not failure(e)], name=name or None,
            throw_new_error_on_trip=False)
        self._probes = 0
        self._lock = threading.Lock()

    @property
    def state(self) -> State:
        """``closed``, ``open`` or ``half-open`` (open with its reset timeout over
        counts as half-open: the next call is a probe)."""
        state = self._storage.state
        if state == pybreaker.STATE_OPEN:
            return "half-open" if self._elapsed() else "open"
        return "half-open" if state == pybreaker.STATE_HALF_OPEN else "closed"

    @property
    def failures(self) -> int:
        """Consecutive failures counted so far."""
        return self._storage.counter

    def _elapsed(self) -> bool:
        opened = self._storage.opened_clock
        return opened is None or self._clock() - opened >= self._breaker.reset_timeout

    def admit(self) -> None:
        """Let a call through, or raise :class:`CircuitOpenError`."""
        storage = self._storage
        if storage.state == pybreaker.STATE_CLOSED:
            return
        with self._lock:
            state = storage.state
            if state == pybreaker.STATE_OPEN:
                if not self._elapsed():
                    left = self._breaker.reset_timeout - (self._clock()
                                                          - (storage.opened_clock or 0))
                    raise CircuitOpenError(
                        f"circuit open{self._label()}: {storage.counter} consecutive "
                        f"failures; next probe in {left:.1f}s", service=self.name)
                self._breaker.half_open()
                self._probes = 0
                state = pybreaker.STATE_HALF_OPEN
            if state == pybreaker.STATE_HALF_OPEN:
                if self._probes >= self.half_open_probes:
                    raise CircuitOpenError(
                        f"circuit half-open{self._label()}: {self._probes} probe(s) in "
                        "flight", service=self.name)
                self._probes += 1

    def record(self, error: BaseException | None) -> None:
        """The outcome of an admitted call: None for success."""
        storage = self._storage
        if error is None and storage.state == pybreaker.STATE_CLOSED and not storage.counter:
            return
        with self._lock:
            if storage.state == pybreaker.STATE_HALF_OPEN and self._probes:
                self._probes -= 1
            with contextlib.suppress(BaseException):  # pybreaker re-raises what we fed it
                if error is None:
                    self._breaker.call(_succeed)
                else:
                    self._breaker.call(_fail, error)

    def call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run ``fn`` under the breaker."""
        self.admit()
        try:
            result = fn(*args, **kwargs)
        except BaseException as err:
            self.record(err)
            raise
        self.record(None)
        return result

    async def acall(self, fn: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
        """Await ``fn(...)`` under the breaker."""
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
                f"failures={self.failures}/{self._breaker.fail_max})")
