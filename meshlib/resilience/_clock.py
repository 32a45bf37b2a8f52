"""Clock and sleep types shared by the policies and decorators.

Every policy takes a ``clock`` (a monotonic ``() -> float``, default
``time.monotonic``) and every waiting decorator a ``sleep``, so tests advance a fake
clock and record sleeps instead of waiting. An async function may be given a plain
``sleep`` (e.g. ``list.append``): :func:`async_sleep` adapts it.

Example::

    class FakeClock:
        now = 0.0
        def __call__(self) -> float:
            return self.now

    breaker = CircuitBreaker(reset_timeout=30, clock=FakeClock())
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Clock", "Sleep", "async_sleep", "callable_name"]

Clock = Callable[[], float]
"""A monotonic clock in seconds, like ``time.monotonic``."""

Sleep = Callable[[float], Any]
"""``time.sleep``-like; for async functions it may also return an awaitable."""


def async_sleep(sleep: Sleep | None) -> Callable[[float], Awaitable[None]]:
    """An awaitable sleep: ``asyncio.sleep`` by default, ``sleep`` itself if it is a
    coroutine function, else ``sleep`` called and its result awaited if awaitable."""
    if sleep is None:
        return asyncio.sleep
    if inspect.iscoroutinefunction(sleep):
        return sleep
    chosen = sleep

    async def adapted(seconds: float) -> None:
        result = chosen(seconds)
        if inspect.isawaitable(result):
            await result

    return adapted


def callable_name(fn: Callable[..., Any]) -> str:
    """A readable name for errors and breakers: the qualified name when there is one."""
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
