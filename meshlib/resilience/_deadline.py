"""The current call's deadline, carried in a ``contextvars.ContextVar``, and the one
helper that caps a timeout by a deadline.

A server handler runs with the incoming call's deadline in force (``mesh.server()``
and ``interceptors.DeadlineServerInterceptor`` set it), :func:`meshlib.timeout` sets
it for the decorated function, and every mesh channel caps its outgoing calls with
what is left of it: deadline propagation, the way gRPC does it between Go services,
for Python code in between.

Deadlines are instants of a monotonic clock (``time.monotonic()`` unless a clock is
injected). Nested scopes only ever shorten the deadline. Works in threads (each
thread has its own context) and asyncio tasks (each task copies its creator's
context).

Every "how long may this wait" in meshlib is :func:`cap_timeout`: a call's timeout
against the propagated deadline, an attempt's per-try timeout against the call's
deadline, a decorator's timeout against the caller's.

Example::

    with deadline_scope(2.0):
        stub.Get(request)        # timeout <= 2 s, less what has been spent already
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import TypeVar

from meshlib.errors import DeadlineExceededError

__all__ = [
    "DEADLINE",
    "cap_timeout",
    "current_deadline",
    "deadline_scope",
    "earliest",
    "remaining",
    "reset_deadline",
    "run_within",
    "set_deadline",
]

_T = TypeVar("_T")
DEADLINE: ContextVar[float | None] = ContextVar("meshlib_deadline", default=None)
"""The context variable behind :func:`current_deadline` (hot paths read it with
``DEADLINE.get()``; set it through :func:`set_deadline` or :func:`deadline_scope`)."""
_monotonic = time.monotonic


def current_deadline() -> float | None:
    """The deadline in force (a ``time.monotonic()`` instant), or None."""
    return DEADLINE.get()


def remaining(now: float | None = None) -> float | None:
    """Seconds left before the deadline in force (may be <= 0), or None."""
    deadline = DEADLINE.get()
    if deadline is None:
        return None
    return deadline - (_monotonic() if now is None else now)


def set_deadline(deadline: float | None) -> object:
    """Shorten the deadline to ``deadline`` (never lengthen it); returns a reset token
    for :func:`reset_deadline`."""
    current = DEADLINE.get()
    if deadline is not None and current is not None and current < deadline:
        deadline = current
    return DEADLINE.set(deadline if deadline is not None else current)


def reset_deadline(token: object) -> None:
    """Undo a :func:`set_deadline`."""
    DEADLINE.reset(token)  # type: ignore[arg-type]


@contextlib.contextmanager
def deadline_scope(timeout: float | None, *, now: float | None = None) -> Iterator[float | None]:
    """Run the block with the deadline at most ``timeout`` seconds from ``now``."""
    start = _monotonic() if now is None else now
    token = set_deadline(None if timeout is None else start + timeout)
    try:
        yield DEADLINE.get()
    finally:
        DEADLINE.reset(token)


def earliest(a: float | None, b: float | None) -> float | None:
    """The sooner of two deadlines (None: no deadline)."""
    if a is None:
        return b
    return a if b is None or a <= b else b


def cap_timeout(timeout: float | None, deadline: float | None, now: float, *,
                what: str = "", expired: bool = True) -> float | None:
    """``timeout`` capped by what is left until ``deadline`` at ``now`` (None: no limit).

    A deadline already passed raises :class:`~meshlib.DeadlineExceededError` naming
    ``what``, or, with ``expired=False``, gives 0.0 (grpc then fails the attempt with
    DEADLINE_EXCEEDED itself).
    """
    if deadline is None:
        return timeout
    left = deadline - now
    if left <= 0:
        if not expired:
            return 0.0
        raise DeadlineExceededError(f"{what}: the deadline passed {-left:.3f}s ago",
                                    service=what)
    return left if timeout is None or left < timeout else timeout


async def run_within(fn: Callable[[], Awaitable[_T]], seconds: float | None,
                     now: float, *, what: str, service: str = "") -> _T:
    """Await ``fn()`` with the deadline ``now + seconds`` in force (or the one in force
    already, if sooner), cancelled when it passes: then
    :class:`~meshlib.DeadlineExceededError` naming ``what`` (and ``service``)."""
    service = service or what
    deadline = earliest(current_deadline(), None if seconds is None else now + seconds)
    left = cap_timeout(None, deadline, now, what=what)
    token = set_deadline(deadline)
    scope = asyncio.timeout(left)
    try:
        async with scope:
            return await fn()
    except TimeoutError as err:
        if not scope.expired():
            raise  # a TimeoutError from inside, not ours
        raise DeadlineExceededError(f"{what}: no result within {left:.3f}s",
                                    service=service) from err
    finally:
        reset_deadline(token)
