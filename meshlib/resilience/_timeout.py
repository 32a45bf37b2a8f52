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

import asyncio
import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

from meshlib._deadline import current_deadline, reset_deadline, set_deadline
from meshlib.errors import DeadlineExceededError
from meshlib.resilience._clock import Clock, callable_name

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

        def expired(start: float, deadline: float) -> DeadlineExceededError:
            return DeadlineExceededError(
                f"{name}: the deadline passed {start - deadline:.3f}s before the call",
                service=name)

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                start = now()
                outer = current_deadline()
                deadline = start + seconds if outer is None else min(outer, start + seconds)
                left = deadline - start
                if left <= 0:
                    raise expired(start, deadline)
                token = set_deadline(deadline)
                scope = asyncio.timeout(left)
                try:
                    async with scope:
                        return await fn(*args, **kwargs)
                except TimeoutError as err:
                    if not scope.expired():
                        raise  # a TimeoutError from inside, not ours
                    raise DeadlineExceededError(
                        f"{name}: no result within {left:.3f}s", service=name) from err
                finally:
                    reset_deadline(token)
            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = now()
            outer = current_deadline()
            if outer is not None and outer <= start:
                raise expired(start, outer)
            token = set_deadline(start + seconds)
            try:
                return fn(*args, **kwargs)
            finally:
                reset_deadline(token)
        return wrapper  # type: ignore[return-value]

    return decorate
