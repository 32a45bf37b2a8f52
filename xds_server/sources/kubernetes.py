"""Read the mesh config from the Kubernetes API: list + watch, the way client-go's
informers do, into the same model the files give.

One :class:`Informer` per kind (and per namespace when ``namespaces`` is given) runs in
a thread: it lists (paged), swaps its whole store at once, then watches from the
list's resourceVersion with bookmarks; it follows bookmarks so a re-watch resumes where
it was, lists again when the server says the version is gone (410 ``Expired``), and
backs off with jitter on errors, keeping its last store meanwhile. A kind the server
does not serve (the Gateway API CRDs not installed, say) is empty, and looked for
again now and then.

:class:`KubernetesSource` joins them: nothing is yielded before every informer has
listed once (a half-listed world is never served), then a :class:`ModelChange` per
burst of events (debounced). Unlike files, an invalid object does not hold the others
back: the model keeps every valid object, and the problems go with it (to be written
as status by the leader).

Example::

    source = KubernetesSource(KubeApi.from_config(), namespaces=("shop",))
    async for change in source.changes(stop):
        await control_plane.apply(change.model)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from meshlib.contract import Problem
from xds_server.kube_api import KubeApi, KubeApiError, Resource
from xds_server.sources.file_watcher import ModelChange
from xds_server.sources.parse import ParseMemo, parse_objects

__all__ = [
    "ACCESS_POLICIES",
    "ENDPOINT_SLICES",
    "GRPC_ROUTES",
    "HTTP_ROUTES",
    "MESH_CONFIGS",
    "MESH_RESOURCES",
    "RESOURCES_BY_KIND",
    "SERVICES",
    "TRAFFIC_POLICIES",
    "Informer",
    "KubernetesSource",
    "problems_by_object",
]

log = logging.getLogger(__name__)

SERVICES = Resource("Service", "v1", "services")
ENDPOINT_SLICES = Resource("EndpointSlice", "discovery.k8s.io/v1", "endpointslices")
GRPC_ROUTES = Resource("GRPCRoute", "gateway.networking.k8s.io/v1", "grpcroutes")
HTTP_ROUTES = Resource("HTTPRoute", "gateway.networking.k8s.io/v1", "httproutes")
TRAFFIC_POLICIES = Resource("TrafficPolicy", "meshlib.dev/v1alpha1", "trafficpolicies")
ACCESS_POLICIES = Resource("AccessPolicy", "meshlib.dev/v1alpha1", "accesspolicies")
MESH_CONFIGS = Resource("MeshConfig", "meshlib.dev/v1alpha1", "meshconfigs", namespaced=False)
#: What the control plane reads.
MESH_RESOURCES = (SERVICES, ENDPOINT_SLICES, GRPC_ROUTES, HTTP_ROUTES, TRAFFIC_POLICIES,
                  ACCESS_POLICIES, MESH_CONFIGS)
RESOURCES_BY_KIND = {r.kind: r for r in MESH_RESOURCES}

WATCH_TIMEOUT = 300  # seconds a watch lasts before the server ends it (jittered)
BACKOFF_MIN, BACKOFF_MAX = 0.8, 30.0  # client-go's reflector backoff bounds
ABSENT_RETRY = 30.0  # how often a kind the server does not serve is looked for again
DEFAULT_DEBOUNCE = 0.03  # seconds; events within it make one model

_Key = tuple[str, str]  # (namespace, name)


class Informer:
    """The objects of one kind (in one namespace, or all), kept in step with the API
    server by a list + watch loop in a thread of its own.

    ``on_change`` is called (from that thread) after every change to :attr:`objects`.
    :attr:`synced` is set once the first list is in.
    """

    def __init__(self, api: KubeApi, resource: Resource, *, namespace: str | None = None,
                 on_change: Callable[[], None] = lambda: None,
                 watch_timeout: int = WATCH_TIMEOUT,
                 sleep: Callable[[float], bool] | None = None) -> None:
        self.api = api
        self.resource = resource
        self.namespace = namespace
        self._on_change = on_change
        self._watch_timeout = watch_timeout
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait  # returns True once stopped
        self._lock = threading.Lock()
        self._objects: dict[_Key, dict[str, Any]] = {}
        self._response: Any = None
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()
        self.resource_version = ""
        self.lists = 0  # how many times it listed (a re-list after 410 counts)
        self.absent = False  # the server does not serve this kind (404 on list)

    @property
    def objects(self) -> list[dict[str, Any]]:
        """A consistent copy of the store (never a half-applied list)."""
        with self._lock:
            return list(self._objects.values())

    def start(self) -> None:
        where = self.namespace or "all namespaces"
        self._thread = threading.Thread(
            target=self._run, name=f"informer-{self.resource.plural}-{where}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the loop: the open watch is closed under it."""
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # already closed
                response.shutdown()  # wakes a read blocked in another thread
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._list()
                failures = 0
                while not self._stop.is_set():
                    self._watch()
            except KubeApiError as err:
                if self._stop.is_set():
                    return
                if err.gone:
                    log.info("%s: resourceVersion %s expired; listing again",
                             self._name, self.resource_version)
                    continue
                if err.status == 404 and not self._objects:
                    self._mark_absent()
                    if self._sleep(ABSENT_RETRY):
                        return
                    continue
                failures += 1
                if self._back_off(failures, err):
                    return
            except Exception as err:
                if self._stop.is_set():
                    return
                failures += 1
                if self._back_off(failures, err):
                    return

    @property
    def _name(self) -> str:
        return f"{self.resource.kind} ({self.namespace or 'all namespaces'})"

    def _back_off(self, failures: int, err: Exception) -> bool:
        delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (failures - 1))
        delay *= random.uniform(0.5, 1.5)
        log.warning("%s: %s; retrying in %.1fs (keeping the %d objects known)",
                    self._name, err, delay, len(self._objects))
        return self._sleep(delay)

    def _mark_absent(self) -> None:
        if not self.absent:
            log.warning("%s: not served by the API server (are its CRDs installed?); "
                        "treated as empty, looked for again every %.0fs",
                        self._name, ABSENT_RETRY)
        self.absent = True
        self.synced.set()
        self._on_change()

    def _list(self) -> None:
        items, version = self.api.list_all(self.resource, self.namespace)
        store = {_key(item): item for item in items}
        with self._lock:
            self._objects = store
        self.resource_version = version
        self.lists += 1
        self.absent = False
        self.synced.set()
        log.debug("%s: listed %d at resourceVersion %s", self._name, len(store), version)
        self._on_change()

    def _watch(self) -> None:
        timeout = int(self._watch_timeout * random.uniform(1.0, 2.0))
        for event in self.api.watch(self.resource, self.resource_version,
                                    namespace=self.namespace, timeout_seconds=timeout,
                                    on_response=self._hold):
            kind = event.get("type")
            obj = event.get("object") or {}
            version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
            if kind in ("ADDED", "MODIFIED"):
                with self._lock:
                    self._objects[_key(obj)] = obj
            elif kind == "DELETED":
                with self._lock:
                    self._objects.pop(_key(obj), None)
            if version:
                self.resource_version = version
            if kind != "BOOKMARK":
                self._on_change()
            if self._stop.is_set():
                return
        self._response = None

    def _hold(self, response: Any) -> None:
        self._response = response
        if self._stop.is_set():  # stopped while connecting
            response.shutdown()


def _key(obj: dict[str, Any]) -> _Key:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace", "")), str(metadata.get("name", ""))


class KubernetesSource:
    """The mesh model from the API server: one informer per kind and namespace."""

    def __init__(self, api: KubeApi, *, namespaces: Sequence[str] = (),
                 resources: Sequence[Resource] = MESH_RESOURCES,
                 debounce: float = DEFAULT_DEBOUNCE, watch_timeout: int = WATCH_TIMEOUT) -> None:
        self.api = api
        self.namespaces = tuple(namespaces)
        self._debounce = debounce
        self._memo = ParseMemo()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        scopes: Sequence[str | None] = self.namespaces or (None,)
        self.informers = [
            Informer(api, resource, namespace=ns if resource.namespaced else None,
                     on_change=self._notify, watch_timeout=watch_timeout)
            for resource in resources for ns in scopes]

    @property
    def synced(self) -> bool:
        """Every informer has listed once."""
        return all(i.synced.is_set() for i in self.informers)

    def objects(self) -> list[dict[str, Any]]:
        """Everything the informers hold now."""
        return [obj for informer in self.informers for obj in informer.objects]

    def load(self) -> ModelChange:
        """The model of what is held now, with the problems of the objects left out."""
        seen = time.monotonic()
        model, problems = parse_objects(
            [(_source(obj), obj) for obj in self.objects()], memo=self._memo)
        return ModelChange(model, tuple(problems), seen)

    def poke(self) -> None:
        """Yield the model again (with its problems) though nothing changed: after
        becoming leader, say, to write status. Any thread."""
        self._notify()

    def _notify(self) -> None:  # informer threads
        loop, changed = self._loop, self._changed
        if loop is not None and changed is not None:
            loop.call_soon_threadsafe(changed.set)

    async def changes(self, stop: asyncio.Event) -> AsyncIterator[ModelChange]:
        """Start the informers; once all have listed, yield the model, then a new one
        after every burst of changes, until ``stop`` is set."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        for informer in self.informers:
            informer.start()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                waiting = asyncio.ensure_future(self._changed.wait())
                await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                if stop.is_set():
                    return
                await asyncio.sleep(self._debounce)
                self._changed.clear()
                if self.synced:
                    yield self.load()
        finally:
            stopping.cancel()
            await asyncio.to_thread(self.close)

    def close(self) -> None:
        for informer in self.informers:
            informer.stop()


def _source(obj: dict[str, Any]) -> str:
    """Where an object came from, as problems name it (the object itself follows)."""
    return "kubernetes"


def problems_by_object(problems: Sequence[Problem]) -> dict[str, list[Problem]]:
    """The problems of each object (``"Kind namespace/name"``)."""
    out: dict[str, list[Problem]] = {}
    for problem in problems:
        out.setdefault(problem.obj, []).append(problem)
    return out
