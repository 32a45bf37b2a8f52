"""Storage as etcd and the watch cache give it to the API server: objects by group
resource, one global revision (``resourceVersion``), a bounded history of change events
that watches and paginated lists read from, and the open watches.

Stored objects are never mutated: a write stores a new dict. Events keep the object
before and after, so a watch with a selector can turn a MODIFIED that leaves (or
enters) its selection into DELETED (ADDED), as the watch cache does, and a list can
be answered as of an older revision (``continue`` tokens, ``resourceVersionMatch=Exact``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.kube._errors import ApiError

__all__ = ["Event", "Store", "Watcher"]

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
Obj = dict[str, Any]


@dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    group_resource: str
    key: Key
    obj: Obj  # after; for DELETED the last state, stamped with the deletion's revision
    prev: Obj | None


@dataclass(eq=False)
class Watcher:
    """One open watch: the events it will send, in order, and why it ends."""

    group_resource: str
    namespace: str | None
    selects: Callable[[Obj], bool]
    bookmarks: bool
    queue: deque[tuple[str, Any]] = field(default_factory=deque)
    cond: threading.Condition = field(default_factory=threading.Condition)
    closed: str | None = None  # "timeout", "dropped", "abrupt", "stopped", "slow"
    sent_rv: int = 0

    def push(self, item: tuple[str, Any]) -> None:
        with self.cond:
            self.queue.append(item)
            self.cond.notify()

    def close(self, why: str) -> None:
        with self.cond:
            if self.closed is None:
                self.closed = why
            self.cond.notify_all()

    def _view(self, ev: Event) -> tuple[str, Obj] | None:
        """The event this watch sees, if any (namespace and selector applied)."""
        if self.namespace is not None and ev.key[0] != self.namespace:
            return None
        now = ev.type != "DELETED" and self.selects(ev.obj)
        before = ev.prev is not None and self.selects(ev.prev)
        if ev.type == "DELETED":
            return ("DELETED", ev.obj) if self.selects(ev.obj) else None
        if now and before:
            return ("MODIFIED", ev.obj)
        if now:
            return ("ADDED", ev.obj)
        if before:
            return ("DELETED", ev.obj)
        return None


class Store:
    """Objects, revisions, history and watches, behind one lock."""

    MAX_QUEUE = 100_000  # a watcher this far behind is closed, as the watch cache does

    def __init__(self, *, history: int = 10_000, first_rv: int = 1000) -> None:
        self.lock = threading.RLock()
        self.rv = first_rv
        self.history: deque[Event] = deque()
        self.history_limit = history
        self.history_start = first_rv  # every event after this revision is in history
        self._objects: dict[str, dict[Key, Obj]] = {}
        self.watchers: set[Watcher] = set()

    # Reads ------------------------------------------------------------------------

    def get(self, group_resource: str, key: Key) -> Obj | None:
        with self.lock:
            return self._objects.get(group_resource, {}).get(key)

    def items(self, group_resource: str, namespace: str | None = None,
              at: int | None = None) -> list[Obj]:
        """Objects in key order (namespace, then name), as of revision ``at``
        (default now); :class:`ApiError` 410 if history no longer reaches it."""
        with self.lock:
            objects = dict(self._objects.get(group_resource, {}))
            if at is not None and at < self.rv:
                if at < self.history_start:
                    raise ApiError.expired(f"too old resource version: {at} "
                                           f"({self.history_start + 1})")
                for ev in reversed(self.history):
                    if ev.rv <= at:
                        break
                    if ev.group_resource != group_resource:
                        continue
                    if ev.prev is None:
                        objects.pop(ev.key, None)
                    else:
                        objects[ev.key] = ev.prev
        return [obj for key, obj in sorted(objects.items())
                if namespace is None or key[0] == namespace]

    def group_resources(self) -> list[str]:
        with self.lock:
            return list(self._objects)

    # Writes -----------------------------------------------------------------------

    def commit(self, group_resource: str, key: Key, obj: Obj | None) -> Obj | None:
        """Store ``obj`` at ``key`` (None: delete), stamping a new resourceVersion;
        record the event and hand it to the watches. Returns what was stored (for a
        delete, the last state with the deletion's revision)."""
        with self.lock:
            bucket = self._objects.setdefault(group_resource, {})
            prev = bucket.get(key)
            self.rv += 1
            if obj is None:
                if prev is None:
                    self.rv -= 1
                    return None
                del bucket[key]
                stored = _stamped(prev, self.rv)
                kind = "DELETED"
            else:
                stored = _stamped(obj, self.rv)
                bucket[key] = stored
                kind = "MODIFIED" if prev is not None else "ADDED"
            ev = Event(self.rv, kind, group_resource, key, stored, prev)
            self.history.append(ev)
            while len(self.history) > self.history_limit:
                self.history_start = self.history.popleft().rv
            for w in list(self.watchers):
                if w.group_resource == group_resource and (view := w._view(ev)):
                    self._deliver(w, view)
            return stored

    def _deliver(self, w: Watcher, view: tuple[str, Obj]) -> None:
        if len(w.queue) >= self.MAX_QUEUE:
            self.watchers.discard(w)
            w.close("slow")
        else:
            w.push(view)

    def drop_group_resource(self, group_resource: str) -> None:
        """Delete every object of a group resource (its CRD went away) and end its
        watches."""
        with self.lock:
            for key in list(self._objects.get(group_resource, {})):
                self.commit(group_resource, key, None)
            self._objects.pop(group_resource, None)
            for w in [w for w in self.watchers if w.group_resource == group_resource]:
                self.watchers.discard(w)
                w.close("dropped")

    def compact(self) -> None:
        """Forget the history: a watch or continue from an earlier revision gets 410."""
        with self.lock:
            self.history.clear()
            self.history_start = self.rv

    # Watches ----------------------------------------------------------------------

    def watch(self, group_resource: str, namespace: str | None,
              selects: Callable[[Obj], bool], resource_version: str, *,
              bookmarks: bool, initial_events: bool) -> Watcher:
        """Open a watch. ``resource_version`` "" or "0": synthetic ADDED events for
        the current objects first; a number: every event after it (410 if older
        than the history). ``initial_events`` (sendInitialEvents=true): the ADDED
        events, then a BOOKMARK marked ``k8s.io/initial-events-end``."""
        w = Watcher(group_resource, namespace, selects, bookmarks)
        with self.lock:
            if resource_version in ("", "0") or initial_events:
                for obj in self.items(group_resource, namespace):
                    if selects(obj):
                        w.push(("ADDED", obj))
                if initial_events:
                    w.push(("BOOKMARK", (self.rv, True)))
            else:
                rv = _parse_rv(resource_version)
                if rv < self.history_start:
                    raise ApiError.expired(f"too old resource version: {rv} "
                                           f"({self.history_start + 1})")
                for ev in self.history:
                    if ev.rv > rv and ev.group_resource == group_resource \
                            and (view := w._view(ev)):
                        w.push(view)
            self.watchers.add(w)
        return w

    def unwatch(self, w: Watcher) -> None:
        with self.lock:
            self.watchers.discard(w)

    def bookmark(self, w: Watcher) -> bool:
        """Queue a BOOKMARK at the current revision if the watch has nothing
        pending (so its revision never runs ahead of an event still queued)."""
        with self.lock:
            with w.cond:
                if w.queue:
                    return False
            w.push(("BOOKMARK", (self.rv, False)))
            return True

    def close_watches(self, why: str) -> int:
        with self.lock:
            watchers = list(self.watchers)
            self.watchers.clear()
        for w in watchers:
            w.close(why)
        return len(watchers)

    def all_objects(self) -> Iterator[tuple[str, Obj]]:
        with self.lock:
            snapshot = [(gr, obj) for gr, bucket in self._objects.items()
                        for obj in bucket.values()]
        yield from snapshot


def _stamped(obj: Obj, rv: int) -> Obj:
    out = dict(obj)
    out["metadata"] = {**obj.get("metadata", {}), "resourceVersion": str(rv)}
    return out


def _parse_rv(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ApiError.bad_request(f'invalid resource version "{text}"') from None
    if value < 0:
        raise ApiError.bad_request(f'invalid resource version "{text}"')
    return value
