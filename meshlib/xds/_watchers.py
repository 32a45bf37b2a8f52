"""What an :class:`~meshlib.xds.XdsClient` watcher must implement (grpc-go's
``ResourceWatcher``), and :class:`WatcherFuncs`, a watcher made of optional callables.

Callbacks run on the client's event loop, one at a time, and must not block:

* ``on_changed(update)`` — a new valid value (also at once, on watch, if cached);
* ``on_error(err)`` — there is no usable value: the resource arrived invalid, or the
  control plane cannot be reached, before any valid value;
* ``on_ambient_error(err)`` — stream trouble, or an invalid update, while a previous
  value is still in use (gRFC A88): keep using the previous value;
* ``on_removed()`` — the resource does not exist (deleted, or never received before
  the does-not-exist timer fired).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from meshlib.errors import XdsError
from meshlib.xds._decoders import Update

__all__ = ["ResourceWatcher", "WatcherFuncs"]


class ResourceWatcher(Protocol):
    """Receives the state of one watched resource."""

    def on_changed(self, update: Update) -> None: ...

    def on_error(self, error: XdsError) -> None: ...

    def on_ambient_error(self, error: XdsError) -> None: ...

    def on_removed(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class WatcherFuncs:
    """A :class:`ResourceWatcher` from optional callables; a missing one ignores its event.

    Example::

        cancel = client.watch(LISTENER, "reviews", WatcherFuncs(changed=print))
    """

    changed: Callable[[Update], None] | None = None
    error: Callable[[XdsError], None] | None = None
    ambient_error: Callable[[XdsError], None] | None = None
    removed: Callable[[], None] | None = None

    def on_changed(self, update: Update) -> None:
        if self.changed:
            self.changed(update)

    def on_error(self, error: XdsError) -> None:
        if self.error:
            self.error(error)

    def on_ambient_error(self, error: XdsError) -> None:
        if self.ambient_error:
            self.ambient_error(error)

    def on_removed(self) -> None:
        if self.removed:
            self.removed()
