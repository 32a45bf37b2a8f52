"""The current call's deadline, carried in a ``contextvars.ContextVar``.

A server interceptor (:mod:`interceptors`) sets it from the incoming call's deadline,
:func:`meshlib.timeout` sets it for the decorated function, and every mesh channel
caps its outgoing calls with what is left of it: deadline propagation, the way gRPC
does it between Go services, for Python code in between.

Deadlines are ``time.monotonic()`` instants. Nested scopes only ever shorten the
deadline. Works in threads (each thread has its own context) and asyncio tasks
(each task copies its creator's context).

Example::

    with deadline_scope(2.0):
        stub.Get(request)        # timeout <= 2 s, less what has been spent already
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["current_deadline", "deadline_scope", "remaining", "reset_deadline", "set_deadline"]

_DEADLINE: ContextVar[float | None] = ContextVar("meshlib_deadline", default=None)


def current_deadline() -> float | None:
    """The deadline in force (a ``time.monotonic()`` instant), or None."""
    return _DEADLINE.get()


def remaining(now: float | None = None) -> float | None:
    """Seconds left before the deadline in force (may be <= 0), or None."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return None
    return deadline - (time.monotonic() if now is None else now)


def set_deadline(deadline: float | None) -> object:
    """Shorten the deadline to ``deadline`` (never lengthen it); returns a reset token
    for ``reset_deadline``."""
    current = _DEADLINE.get()
    if deadline is not None and current is not None and current < deadline:
        deadline = current
    return _DEADLINE.set(deadline if deadline is not None else current)


def reset_deadline(token: object) -> None:
    """Undo a :func:`set_deadline`."""
    _DEADLINE.reset(token)  # type: ignore[arg-type]


@contextlib.contextmanager
def deadline_scope(timeout: float | None, *, now: float | None = None) -> Iterator[float | None]:
    """Run the block with the deadline at most ``timeout`` seconds from ``now``."""
    start = time.monotonic() if now is None else now
    token = set_deadline(None if timeout is None else start + timeout)
    try:
        yield _DEADLINE.get()
    finally:
        _DEADLINE.reset(token)
