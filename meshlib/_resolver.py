"""From xDS watches to :class:`RouteTable` swaps: LDS → RDS → CDS → EDS, followed
automatically, on the xDS thread's event loop.

A :class:`TargetResolver` watches the target's Listener, then its RouteConfiguration,
then (through the shared :class:`ClusterRegistry`) every cluster its routes name and
their endpoints. It publishes a new table only when every cluster it names has its
configuration and endpoints (or is known missing), so a weight shift to a new backend
never sends calls to a cluster that has no endpoints yet — as gRPC's dependency
manager does. Until then calls keep using the previous table.

Readiness (:attr:`Target.ready`) is set at the first table, or when the control plane
says the target does not exist, or reports an error with no previous value; calls
waiting for it then proceed or fail with a clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Literal

import grpc

from meshlib._cluster_state import ClusterState
from meshlib._route_table import RouteTable
from meshlib.contract import DEFAULT_TRACING_SAMPLING
from meshlib.errors import XdsError
from meshlib.xds import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    ClusterUpdate,
    EndpointsUpdate,
    ListenerUpdate,
    RouteConfigUpdate,
    Update,
    WatcherFuncs,
    XdsClient,
    pick_virtual_host,
)

__all__ = ["ClusterRegistry", "Target", "TargetResolver"]

log = logging.getLogger("meshlib")

Status = Literal["pending", "ready", "not_found", "error"]


class Target:
    """What calls to one target read: the current table and why there is none.

    Written by the resolver on the xDS thread, read by calls on any thread.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.table: RouteTable | None = None
        self.status: Status = "pending"
        self.error: str = ""
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def settle(self, status: Status, table: RouteTable | None = None, error: str = "") -> None:
        """Publish: a new table (``ready``), or a terminal answer without one."""
        if table is not None:
            self.table = table
        self.status = status
        self.error = error
        with self._lock:
            self.ready.set()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed meanwhile
                loop.call_soon_threadsafe(_resolve, future)

    def connectivity(self) -> grpc.ChannelConnectivity:
        """Connectivity as a mesh channel reports it: READY once the configuration is
        known, TRANSIENT_FAILURE if the target is not in the mesh, else CONNECTING."""
        if self.table is not None:
            return grpc.ChannelConnectivity.READY
        if self.ready.is_set():
            return grpc.ChannelConnectivity.TRANSIENT_FAILURE
        return grpc.ChannelConnectivity.CONNECTING

    def wait_async(self) -> asyncio.Future[None]:
        """A future of the running loop, done once :attr:`ready` is set."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self.ready.is_set():
                future.set_result(None)
            else:
                self._waiters.append((loop, future))
        return future


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _ClusterEntry:
    __slots__ = ("cancel_cds", "cancel_eds", "eds_name", "state", "status", "users")

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.users: set[TargetResolver] = set()
        self.cancel_cds: Callable[[], None] = _noop
        self.cancel_eds: Callable[[], None] = _noop
        self.eds_name = ""
        self.status: Literal["pending", "ready", "missing"] = "pending"


def _noop() -> None:
    pass


def _keep_last_good(error: XdsError) -> None:
    """An invalid update (NACKed) or stream trouble while a good value is in use."""
    log.warning("xDS: %s (keeping the last good configuration)", error)


class ClusterRegistry:
    """Cluster states shared by every target of a Mesh, watched while used."""

    def __init__(self, client: XdsClient,
                 make_state: Callable[[str], ClusterState]) -> None:
        self._client = client
        self._make_state = make_state
        self._entries: dict[str, _ClusterEntry] = {}

    def acquire(self, name: str, user: TargetResolver) -> _ClusterEntry:
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = _ClusterEntry(self._make_state(name))
            entry.cancel_cds = self._client.watch(CLUSTER, name, WatcherFuncs(
                changed=lambda u, e=entry: self._on_cluster(e, u),
                removed=lambda e=entry: self._on_missing(e, "cluster does not exist"),
                error=lambda err, e=entry: self._on_missing(e, str(err)),
                ambient_error=_keep_last_good,
            ))
        entry.users.add(user)
        return entry

    def release(self, name: str, user: TargetResolver) -> None:
        entry = self._entries.get(name)
        if entry is None:
            return
        entry.users.discard(user)
        if not entry.users:
            del self._entries[name]
            entry.cancel_cds()
            entry.cancel_eds()
            entry.state.set_endpoints(())  # releases the endpoint channels

    def _on_cluster(self, entry: _ClusterEntry, update: Update) -> None:
        assert isinstance(update, ClusterUpdate)
        entry.state.set_config(update)
        if update.eds_service_name != entry.eds_name:
            entry.cancel_eds()
            entry.eds_name = update.eds_service_name
            entry.cancel_eds = self._client.watch(ENDPOINT, entry.eds_name, WatcherFuncs(
                changed=lambda u, e=entry: self._on_endpoints(e, u),
                removed=lambda e=entry: self._on_endpoints(e, None),
                error=lambda err, e=entry: self._on_missing(e, str(err)),
                ambient_error=_keep_last_good,
            ))
        elif entry.status == "missing" and entry.state.has_endpoints:
            entry.status = "ready"
        self._notify(entry)

    def _on_endpoints(self, entry: _ClusterEntry, update: Update | None) -> None:
        if update is None:
            entry.state.set_endpoints(())
        else:
            assert isinstance(update, EndpointsUpdate)
            entry.state.set_endpoints(update.endpoints)
        if entry.state.config is not None:
            entry.status = "ready"
        self._notify(entry)

    def _on_missing(self, entry: _ClusterEntry, why: str) -> None:
        log.warning("cluster %s: %s", entry.state.name, why)
        if entry.state.config is None or not entry.state.has_endpoints:
            entry.status = "missing"
            entry.state.set_endpoints(())
            self._notify(entry)

    def _notify(self, entry: _ClusterEntry) -> None:
        for user in list(entry.users):
            user.clusters_changed()

    def states(self) -> list[ClusterState]:
        """Every cluster in use (a snapshot; for metrics)."""
        return [entry.state for entry in list(self._entries.values())]

    def is_settled(self, name: str) -> bool:
        entry = self._entries.get(name)
        return entry is not None and entry.status != "pending"

    def state(self, name: str) -> ClusterState:
        return self._entries[name].state


class TargetResolver:
    """Follows one target's Listener → RouteConfiguration → clusters (on the xDS loop)."""

    def __init__(self, target: Target, client: XdsClient, registry: ClusterRegistry) -> None:
        self.target = target
        self._client = client
        self._registry = registry
        self._route_name = ""
        self._cancel_rds: Callable[[], None] = _noop
        self._routes: RouteConfigUpdate | None = None
        self._clusters: set[str] = set()
        self._stale: set[str] = set()
        self._observability: tuple[float, bool] = (DEFAULT_TRACING_SAMPLING, False)
        self._cancel_lds = client.watch(LISTENER, target.name, WatcherFuncs(
            changed=self._on_listener, removed=self._on_listener_removed,
            error=self._on_error, ambient_error=self._on_ambient_error))

    def close(self) -> None:
        self._cancel_lds()
        self._cancel_rds()
        for name in self._clusters:
            self._registry.release(name, self)
        self._clusters = set()

    def _on_listener(self, update: Update) -> None:
        assert isinstance(update, ListenerUpdate)
        self._observability = (update.tracing_sampling, update.access_log)
        if update.route_config is not None:
            self._cancel_rds()
            self._cancel_rds, self._route_name = _noop, ""
            self._on_routes(update.route_config)
        elif update.route_config_name == self._route_name:
            self.clusters_changed()  # e.g. the listener came back: publish again
        else:
            self._cancel_rds()
            self._route_name = update.route_config_name or ""
            self._cancel_rds = self._client.watch(ROUTE, self._route_name, WatcherFuncs(
                changed=self._on_routes, error=self._on_error, ambient_error=_keep_last_good,
                removed=lambda: self._fail("error", f"route {self._route_name} removed")))

    def _on_listener_removed(self) -> None:
        self._fail("not_found", f"the control plane has no service {self.target.name!r}")

    def _on_error(self, error: XdsError) -> None:
        log.warning("%s: %s", self.target.name, error)
        if self.target.table is None:
            self._fail("error", str(error))

    def _on_ambient_error(self, error: XdsError) -> None:
        _keep_last_good(error)

    def _fail(self, status: Literal["not_found", "error"], why: str) -> None:
        if status == "not_found":
            self.target.table = None
        self.target.settle(status, error=why)

    def _on_routes(self, update: Update) -> None:
        assert isinstance(update, RouteConfigUpdate)
        self._routes = update
        vhost = pick_virtual_host(update.virtual_hosts, self.target.name)
        names = set()
        if vhost is not None:
            names = {c.name for r in vhost.routes if r.action for c in r.action.clusters}
        old = self._clusters
        self._clusters = old | names  # release the old ones once the new table is out
        self._stale = old - names
        for name in names - old:
            self._registry.acquire(name, self)
        self.clusters_changed()

    def clusters_changed(self) -> None:
        """Publish a table once every cluster the routes name is settled."""
        routes = self._routes
        if routes is None:
            return
        vhost = pick_virtual_host(routes.virtual_hosts, self.target.name)
        if vhost is None:
            self._fail("error", f"route {routes.name} has no virtual host for "
                                f"{self.target.name!r}")
            return
        names = {c.name for r in vhost.routes if r.action for c in r.action.clusters}
        if not all(self._registry.is_settled(n) for n in names):
            return
        clusters = {n: self._registry.state(n) for n in names}
        sampling, access_log = self._observability
        self.target.settle("ready", RouteTable.build(self.target.name, vhost, clusters,
                                                     sampling=sampling, access_log=access_log))
        stale, self._stale = self._stale, set()
        for name in stale:
            self._registry.release(name, self)
        self._clusters -= stale
