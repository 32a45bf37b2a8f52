"""The ``@timeout`` decorator: a deadline for everything a function does.

The body runs with a deadline in force (as in :func:`meshlib.deadline_scope`), so every
mesh call (and every plain gRPC call through ``interceptors.DeadlineClientInterceptor``)
inside is capped by what is left: deadline propagation. Deadlines nest and only ever
shorten.

Example::

    @timeout(2.0)
    async def get_reviews(request):
        return await stub.Get(request)      # timeout <= what is left of 2 s
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

from meshlib.resilience._clock import Clock, callable_name
from meshlib.resilience._deadline import (
    cap_timeout,
    current_deadline,
    reset_deadline,
    run_within,
    set_deadline,
)

__all__ = ["timeout"]

_F = TypeVar("_F", bound=Callable[..., Any])


def timeout(seconds: float, *, clock: Clock | None = None) -> Callable[[_F], _F]:
    """Give a sync or async function a deadline ``seconds`` from its start (or the
    caller's deadline, if sooner).

    * An async function is cancelled at the deadline and raises
      :class:`~meshlib.DeadlineExceededError` (DEADLINE_EXCEEDED, also a
      ``TimeoutError``).
    * A sync function cannot be interrupted. It raises ``DeadlineExceededError`` only
      if the deadline has already passed when it starts; inside, the calls it makes
      through meshlib are capped by what is left and fail with DEADLINE_EXCEEDED
      themselves. A sync body that overruns without making such calls returns
      normally.

    ``clock`` is the monotonic clock deadlines are measured on (``time.monotonic``;
    tests may pass a fake one to inspect :func:`meshlib.current_deadline`).
    """
    if seconds <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {seconds}")
    now = time.monotonic if clock is None else clock

    def decorate(fn: _F) -> _F:
        name = callable_name(fn)

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                return await run_within(lambda: fn(*args, **kwargs), seconds, now(),
                                        what=name)
            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = now()
            cap_timeout(None, current_deadline(), start, what=name)  # raises if passed
            token = set_deadline(start + seconds)
            try:
                return fn(*args, **kwargs)
            finally:
                reset_deadline(token)
        return wrapper  # type: ignore[return-value]

    return decorate
