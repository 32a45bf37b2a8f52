"""The Mesh's own asyncio loop, on a daemon thread: the xDS client, certificate
renewal and the PERMISSIVE fronts run there, so sync and asyncio applications share
one control-plane stream. Calls never wait on it: they read what it publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["BackgroundLoop"]

log = logging.getLogger("meshlib")
_T = TypeVar("_T")


class BackgroundLoop:
    """An event loop running on a daemon thread of its own until :meth:`stop`."""

    def __init__(self, name: str = "meshlib-xds") -> None:
        self.loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, fn: Callable[[], Awaitable[_T]] | Callable[[], _T]) -> Future[Any]:
        """Run ``fn()`` on the loop (awaited when it returns an awaitable); the result
        as a ``concurrent.futures.Future``."""
        async def run() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result
        return asyncio.run_coroutine_threadsafe(run(), self.loop)

    def spawn(self, coroutine: Callable[[], Awaitable[Any]]) -> None:
        """Start ``coroutine()`` as a task of the loop, kept until it ends."""
        def start() -> None:
            task = self.loop.create_task(coroutine())  # type: ignore[arg-type]
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.call_soon(start)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Thread-safe ``call_soon``; nothing happens once the loop is closed."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(fn, *args)

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Thread-safe ``call_later``; nothing happens once the loop is closed (what was
        scheduled is then closed by its owner anyway)."""
        self.call_soon(self.loop.call_later, delay, fn)

    def stop(self, shutdown: Callable[[], Awaitable[None]]) -> None:
        """Await ``shutdown()`` on the loop (5 s at most), cancel what is left, stop the
        loop and join its thread."""
        async def finish() -> None:
            await shutdown()
            await asyncio.sleep(0.01)  # let grpc.aio finish its own status tasks
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        try:
            self.submit(finish).result(timeout=5)
        except Exception:  # still stop the thread
            log.warning("meshlib: the xDS loop did not shut down cleanly", exc_info=True)
        self.call_soon(self.loop.stop)
        self._thread.join(timeout=5)
        with contextlib.suppress(RuntimeError):
            self.loop.close()
