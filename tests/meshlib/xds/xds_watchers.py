"""A recording watcher and a bounded wait, shared by the XdsClient tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from meshlib.errors import XdsError
from meshlib.xds import Update


@dataclass(eq=False)
class Recorder:
    """A ResourceWatcher that keeps every callback it got, in order."""

    changed: list[Update] = field(default_factory=list)
    errors: list[XdsError] = field(default_factory=list)
    ambient: list[XdsError] = field(default_factory=list)
    removed: int = 0
    log: list[str] = field(default_factory=list)

    def on_changed(self, update: Update) -> None:
        self.changed.append(update)
        self.log.append("changed")

    def on_error(self, error: XdsError) -> None:
        self.errors.append(error)
        self.log.append("error")

    def on_ambient_error(self, error: XdsError) -> None:
        self.ambient.append(error)
        self.log.append("ambient")

    def on_removed(self) -> None:
        self.removed += 1
        self.log.append("removed")


async def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)
