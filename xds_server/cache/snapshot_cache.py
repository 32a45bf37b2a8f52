"""Which version each node gets: one snapshot per node group, and open watches.

Concurrency: a :class:`SnapshotCache` belongs to one thread — the asyncio loop that
runs the ADS server. ``set_snapshot`` calls the ``respond`` callbacks of the answered
watches synchronously, and those touch stream state owned by the loop; so build
snapshots anywhere (an executor), but set them on the loop (e.g.
``loop.call_soon_threadsafe``). A call from another thread raises ``RuntimeError``.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2

from xds_server.cache.answers import delta_answer, sotw_answer
from xds_server.cache.snapshot import Snapshot
from xds_server.cache.watch import Cancel, DeltaResponse, Response, WatchRequest
from xds_server.node import group_of as node_group_of
from xds_server.resources import ADS_ORDER

__all__ = ["SnapshotCache", "default_group_key"]

log = logging.getLogger(__name__)

_ORDER = {type_url: i for i, type_url in enumerate(ADS_ORDER)}


def default_group_key(node: base_pb2.Node) -> str:
    """``xds_server.node.group_of(node).key``."""
    return node_group_of(node).key


@dataclass(slots=True, eq=False)
class _Watch:
    id: int
    group: str
    request: WatchRequest
    respond: Callable[[Any], None]
    delta: bool

    def answer(self, snapshot: Snapshot) -> Response | DeltaResponse | None:
        if self.delta:
            return delta_answer(self.request, snapshot)
        return sotw_answer(self.request, snapshot)

    def sort_key(self) -> tuple[int, int]:
        return _ORDER.get(self.request.type_url, len(_ORDER)), self.id


class SnapshotCache:
    """Snapshots by group key, answering watches when a node's answer changes.

    Example::

        cache = SnapshotCache()                 # groups by xds_server.node.group_of
        cache.set_snapshot("grpc/default", Snapshot.from_messages(resources))
        cancel = cache.create_watch(request, respond)   # respond(Response) when due

    Not thread-safe by design: use it from the event loop thread only (see module doc).
    """

    def __init__(self, group_of: Callable[[base_pb2.Node], str] = default_group_key) -> None:
        self._group_of = group_of
        self._snapshots: dict[str, Snapshot] = {}
        self._watches: dict[str, dict[int, _Watch]] = {}
        self._ids = itertools.count(1)
        self._owner: int | None = None

    def group_key(self, node: base_pb2.Node) -> str:
        """The group whose snapshot ``node`` gets."""
        return self._group_of(node)

    def set_snapshot(self, group: str, snapshot: Snapshot) -> None:
        """Serve ``snapshot`` to ``group`` and answer the watches it changes.

        Raises :class:`~meshlib.contract.InconsistentSnapshotError` (and keeps the
        previous snapshot) if it references RDS/EDS/CDS names it does not contain.
        """
        self._check_thread()
        snapshot.check_consistent()
        self._snapshots[group] = snapshot
        watches = self._watches.get(group)
        if not watches:
            return
        answered = 0
        # Each watch is asked about just the names it subscribed to: cheaper than
        # versioning whole types first (20,000 listener names hash in ~10 ms).
        for watch in sorted(watches.values(), key=_Watch.sort_key):
            if self._fire(watch, snapshot):
                answered += 1
        log.debug("group %s: snapshot answered %d watch(es)", group, answered)

    def get_snapshot(self, group: str) -> Snapshot | None:
        """The snapshot served to ``group``, or None."""
        return self._snapshots.get(group)

    def groups(self) -> tuple[str, ...]:
        """Groups that have a snapshot, sorted."""
        return tuple(sorted(self._snapshots))

    def clear(self, group: str) -> None:
        """Forget ``group``'s snapshot; its open watches wait for the next one."""
        self._check_thread()
        self._snapshots.pop(group, None)

    def create_watch(self, request: WatchRequest, respond: Callable[[Response], None]) -> Cancel:
        """State-of-the-world watch; ``respond`` may run before this returns."""
        return self._create(request, respond, delta=False)

    def create_delta_watch(
        self, request: WatchRequest, respond: Callable[[DeltaResponse], None]
    ) -> Cancel:
        """Incremental watch; ``respond`` may run before this returns."""
        return self._create(request, respond, delta=True)

    def open_watches(self, group: str | None = None) -> tuple[WatchRequest, ...]:
        """The requests of the open watches (of ``group``): what each stream
        subscribed and has (``known``), for the admin view and tests."""
        groups = [group] if group is not None else sorted(self._watches)
        return tuple(
            w.request
            for g in groups
            for w in sorted(self._watches.get(g, {}).values(), key=_Watch.sort_key)
        )

    def _create(self, request: WatchRequest, respond: Callable[[Any], None], *,
                delta: bool) -> Cancel:
        self._check_thread()
        group = self._group_of(request.node)
        watch = _Watch(next(self._ids), group, request, respond, delta)
        snapshot = self._snapshots.get(group)
        if snapshot is not None and (answer := watch.answer(snapshot)) is not None:
            self._deliver(watch, answer)
            return _noop
        self._watches.setdefault(group, {})[watch.id] = watch

        def cancel() -> None:
            watches = self._watches.get(group)
            if watches is not None:
                watches.pop(watch.id, None)
                if not watches:
                    del self._watches[group]

        return cancel

    def _fire(self, watch: _Watch, snapshot: Snapshot) -> bool:
        watches = self._watches.get(watch.group)
        if watches is None or watch.id not in watches:
            return False  # cancelled by an earlier respond callback
        answer = watch.answer(snapshot)
        if answer is None:
            return False
        del watches[watch.id]
        self._deliver(watch, answer)
        return True

    @staticmethod
    def _deliver(watch: _Watch, answer: Response | DeltaResponse) -> None:
        try:
            watch.respond(answer)
        except Exception:  # one broken stream must not stop the others' pushes
            log.exception("watch %d (%s): respond callback failed", watch.id,
                          watch.request.type_url)

    def _check_thread(self) -> None:
        me = threading.get_ident()
        if self._owner is None:
            self._owner = me
        elif self._owner != me:
            raise RuntimeError("SnapshotCache used from two threads; call it on the event loop")


def _noop() -> None:
    return None
