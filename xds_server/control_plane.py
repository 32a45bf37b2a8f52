"""The control plane process: a source of models, one snapshot per node group, ADS.

Event flow, all on the event loop: the file watcher yields a model →
:meth:`ControlPlane.apply` rebuilds the snapshot of every node group seen so far,
incrementally (``SnapshotBuilder``) → ``SnapshotCache.set_snapshot`` → the cache
answers the open watches whose resources changed → the ADS streams write the
responses. A node of a group not seen before gets its snapshot built when its stream
opens (``node_connected``), before its first watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from meshlib.contract import PEER_IDENTITY_METADATA_KEY
from xds_server.admin import AdminServer, AdminViews
from xds_server.ca import (
    DEFAULT_SERVING_NAMES,
    CertificateAuthority,
    CertificateService,
    DirectoryCaStore,
    ServingCertificates,
    StaticTokens,
)
from xds_server.cache import Snapshot, SnapshotCache
from xds_server.cluster import ClusterOptions
from xds_server.metrics import ControlPlaneMetrics
from xds_server.model import MeshModel
from xds_server.node import NodeGroup, group_of
from xds_server.resources import short_name
from xds_server.server import CallbackFuncs, serve, serve_services
from xds_server.snapshot_builder import SnapshotBuilder
from xds_server.sources.file_watcher import watch_model
from xds_server.sources.yaml_loader import ConfigLoader

__all__ = [
    "DEFAULT_CA_PORT",
    "DEFAULT_GROUP_IDLE_SECONDS",
    "MAX_ANONYMOUS_GROUPS",
    "MAX_GROUPS_PER_IDENTITY",
    "ControlPlane",
    "ControlPlaneOptions",
    "GroupLimitError",
    "run",
]

log = logging.getLogger(__name__)

# How long a node group keeps its snapshot after its last client disconnects.
DEFAULT_GROUP_IDLE_SECONDS = 300.0
#: How many node groups (kind × namespace × outbound port × TLS) one authenticated
#: identity may have snapshots built for; a real workload needs one or two.
MAX_GROUPS_PER_IDENTITY = 16
#: How many node groups unauthenticated clients (``--insecure``) may create in all.
MAX_ANONYMOUS_GROUPS = 1000
#: Where the certificate service listens when the xDS port requires client
#: certificates and no ``--ca-address`` is given: the xDS host, this port.
DEFAULT_CA_PORT = 15012


class GroupLimitError(Exception):
    """A client would create more node groups than its identity may have."""


class ControlPlane:
    """Keeps a snapshot per node group in step with the serving :class:`MeshModel`.

    Example::

        cp = ControlPlane(load_model("examples/mesh"))
        server, port = await serve(("127.0.0.1", 0), cp.cache, cp.callbacks())
        ...
        await cp.apply(load_model("examples/mesh"))   # after an edit
    """

    def __init__(self, model: MeshModel, *, metrics: ControlPlaneMetrics | None = None) -> None:
        self.metrics = metrics or ControlPlaneMetrics()
        self.cache = SnapshotCache()
        self._builder = SnapshotBuilder()
        self._model = model
        self._groups: dict[str, NodeGroup] = {}
        self._streams: dict[str, int] = {}  # open streams per group
        self._owners: dict[str, set[str]] = {}  # groups by who created them ("" = anonymous)
        self.group_idle_seconds = DEFAULT_GROUP_IDLE_SECONDS
        self._apply_lock = asyncio.Lock()
        self._count_objects(model)

    @property
    def model(self) -> MeshModel:
        return self._model

    def snapshot_for(self, group: NodeGroup) -> Snapshot:
        """The group's snapshot, built now from the serving model if it has none."""
        snapshot = self.cache.get_snapshot(group.key)
        if snapshot is None:
            snapshot = self._builder.build(self._model, group)
            self.cache.set_snapshot(group.key, snapshot)
            self._groups[group.key] = group
            self.metrics.snapshot_groups.set(len(self._groups))
            log.info("node group %s: snapshot %s built", group.key, snapshot.version)
        return snapshot

    async def apply(self, model: MeshModel, *, seen_at: float | None = None) -> bool:
        """Serve ``model``: rebuild every group's snapshot; return False if unchanged."""
        async with self._apply_lock:
            if model == self._model:
                self.metrics.reloads.labels("ok").inc()
                return False
            groups = list(self._groups.values())
            # On the loop, not in a worker thread: an incremental build takes a few
            # milliseconds, and a thread would only contend with the loop for the GIL
            # (measured: +20 ms a push at 1,000 Services).
            try:
                snapshots = [self._builder.build(model, g) for g in groups]
                for snapshot in snapshots:
                    snapshot.check_consistent()
            except Exception:
                # A bug, not bad input (sources validate): keep serving the old model.
                log.exception("config could not be translated; still serving the previous one")
                self.metrics.reloads.labels("error").inc()
                return False
            self._model = model
            self.metrics.reloads.labels("ok").inc()
            for group, snapshot in zip(groups, snapshots, strict=True):
                self.cache.set_snapshot(group.key, snapshot)
            self._count_objects(model)
            if seen_at is not None:
                self.metrics.reload_duration.observe(time.monotonic() - seen_at)
            log.info("config applied to %d node group(s)", len(groups))
            return True

    def _evict_if_idle(self, key: str) -> None:
        """Forget a group nobody has been connected to for a while (namespaces come and
        go; any client can name a new one), so reloads rebuild only live groups."""
        if self._streams.get(key, 0) > 0 or key not in self._groups:
            return
        del self._groups[key]
        self._streams.pop(key, None)
        self.cache.clear(key)
        self._builder.forget(key)
        for groups in self._owners.values():
            groups.discard(key)
        self.metrics.snapshot_groups.set(len(self._groups))
        log.info("node group %s: idle, snapshot dropped", key)

    def _admit(self, group: NodeGroup, node: Any) -> None:
        """Bound the snapshots clients can make the control plane build: a group new to
        an identity counts against :data:`MAX_GROUPS_PER_IDENTITY` (anonymous clients
        share :data:`MAX_ANONYMOUS_GROUPS`); over it, the stream is refused."""
        fields = node.metadata.fields
        owner = fields[PEER_IDENTITY_METADATA_KEY].string_value \
            if PEER_IDENTITY_METADATA_KEY in fields else ""
        owned = self._owners.setdefault(owner, set())
        if group.key in owned:
            return
        limit = MAX_GROUPS_PER_IDENTITY if owner else MAX_ANONYMOUS_GROUPS
        if len(owned) >= limit:
            self.metrics.refused_groups.inc()
            raise GroupLimitError(
                f"{owner or 'anonymous clients'} already use {len(owned)} node groups "
                f"(the limit): not creating {group.key}")
        owned.add(group.key)

    def callbacks(self) -> CallbackFuncs:
        """The ADS hooks: snapshot on first contact, metrics on every event."""
        m = self.metrics

        def on_response(stream_id: int, node: Any, request: Any, response: Any,
                        created_at: float | None) -> None:
            label = short_name(response.type_url)
            m.pushes.labels(label).inc()
            if created_at is not None:
                m.push_latency.labels(label).observe(time.monotonic() - created_at)

        def on_open(stream_id: int, node: Any, protocol: str) -> None:
            # Runs before the stream's first watch, for SotW and delta alike.
            group = group_of(node)
            self._admit(group, node)
            self.snapshot_for(group)
            self._streams[group.key] = self._streams.get(group.key, 0) + 1
            m.connected_clients.labels(group.kind, protocol).inc()

        def on_closed(stream_id: int, node: Any, protocol: str) -> None:
            group = group_of(node)
            m.connected_clients.labels(group.kind, protocol).dec()
            self._streams[group.key] -= 1
            if self._streams[group.key] == 0:
                asyncio.get_running_loop().call_later(
                    self.group_idle_seconds, self._evict_if_idle, group.key)

        return CallbackFuncs(
            stream_response=on_response,
            node_connected=on_open,
            node_disconnected=on_closed,
            nack=lambda stream_id, node, type_url, detail: m.nacks.labels(
                short_name(type_url)).inc(),
            ack=lambda stream_id, node, type_url, version: m.acks.labels(
                short_name(type_url)).inc(),
        )

    def config_dump(self, group: NodeGroup) -> dict[str, Any]:
        """What nodes of ``group`` get, as JSON-ready dicts (for ``/debug/config_dump``)."""
        snapshot = self.snapshot_for(group)
        return {
            "group": group.key,
            "version": snapshot.version,
            "resources": {
                short_name(type_url): [
                    {
                        "name": name,
                        "version": res.version,
                        "resource": json_format.MessageToDict(res.message),
                    }
                    for name, res in sorted(by_name.items())
                ]
                for type_url, by_name in snapshot.resources.items()
            },
        }

    def summary(self) -> str:
        """What is served, for a log line: ``version 1a2b…: 3 Service, 4 EndpointSlice, …``."""
        snapshot = self.cache.get_snapshot(NodeGroup(kind="grpc").key)
        counts = ", ".join(f"{n} {kind}" for kind, n in _object_counts(self._model).items())
        version = f"version {snapshot.version}: " if snapshot is not None else ""
        return f"{version}{counts}"

    def _count_objects(self, model: MeshModel) -> None:
        for kind, n in _object_counts(model).items():
            self.metrics.model_objects.labels(kind).set(n)


def _object_counts(model: MeshModel) -> dict[str, int]:
    return {
        "Service": len(model.services),
        "EndpointSlice": len(model.endpoint_slices),
        "Route": len(model.routes),
        "TrafficPolicy": len(model.traffic_policies),
        "AccessPolicy": len(model.access_policies),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlPlaneOptions:
    """``meshctl control-plane`` flags.

    Secure by default: the xDS port (``xds_address``) serves ADS over mTLS only, to
    clients whose mesh certificate proves who they are, and the certificate service
    listens on ``ca_address`` (default: the xDS host, :data:`DEFAULT_CA_PORT`) over
    TLS, for workloads that authenticate with a token. Both present a serving
    certificate from the CA in ``ca_dir``, which is therefore required. ``insecure``:
    plaintext on one port (the CA on the xDS port unless ``ca_address``), and the
    namespace taken from what nodes claim — for a laptop, never a cluster.
    """

    config: Path | None = None  # files, or:
    kubernetes: ClusterOptions | None = None  # the Kubernetes API (--kubernetes)
    xds_address: tuple[str, int] = ("127.0.0.1", 15010)
    ca_address: tuple[str, int] | None = None
    admin_address: tuple[str, int] | None = None
    ca_dir: Path | None = None  # the CA's key and certificate (created on first start)
    token_file: Path | None = None  # bootstrap tokens for the certificate service
    insecure: bool = False  # plaintext, unauthenticated xDS (logs a warning)
    tls_names: tuple[str, ...] = ()  # names the serving certificate is for (default: see run)
    stop: asyncio.Event | None = field(default=None, compare=False)

    def check(self) -> None:
        """Raise ValueError for a combination that cannot work."""
        if (self.config is None) == (self.kubernetes is None):
            raise ValueError("give one config source: --config PATH or --kubernetes")
        if not self.insecure and self.ca_dir is None and self.kubernetes is None:
            raise ValueError(
                "the control plane serves mTLS by default, with certificates from its CA: "
                "give --ca-dir DIR (created on first start), or --insecure for plaintext "
                "on a development machine")
        if self.insecure and self.tls_names:
            raise ValueError("--tls-name names the serving certificate: it has no use "
                             "with --insecure")

    @property
    def certificate_address(self) -> tuple[str, int]:
        """Where the certificate service listens."""
        if self.ca_address is not None:
            return self.ca_address
        return self.xds_address if self.insecure else (self.xds_address[0], DEFAULT_CA_PORT)


async def run(options: ControlPlaneOptions) -> None:
    """Load the config (files, or the Kubernetes API), serve ADS, the CA and the admin
    endpoint, and follow every change; until stopped."""
    options.check()
    loop = asyncio.get_running_loop()
    stop = options.stop or asyncio.Event()
    signals = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not main thread
            loop.add_signal_handler(sig, stop.set)
            signals.append(sig)
    state = _Serving()
    admin = None
    servers: list[Any] = []
    cluster = None
    try:
        if options.admin_address is not None:  # up first: /readyz says when we serve
            admin = AdminServer(options.admin_address, _admin_views(state, loop))
            admin.start()
            log.info("admin on %s:%d", options.admin_address[0], admin.port)
        if options.kubernetes is not None:
            from xds_server.cluster import Cluster

            cluster = await asyncio.to_thread(Cluster, options.kubernetes)
            changes = cluster.source.changes(stop)
            state.waiting = "the Kubernetes informers have not listed everything yet"
            first = await anext(changes, None)  # once every informer has listed
            if first is None or first.model is None:
                return
            model = first.model
            _report(first, options)
        else:
            loader = ConfigLoader(options.config)
            model = await asyncio.to_thread(loader.load)  # invalid at start: fail
            changes = watch_model(options.config, loader=loader, stop_event=stop)
        cp = state.cp = ControlPlane(model)
        cp.snapshot_for(NodeGroup(kind="grpc"))  # the common group, before clients come
        # The loaded config lives as long as the process: keep it out of the collector's
        # full passes, which otherwise add tens of ms to pushes at 1,000 Services.
        gc.freeze()
        ca = await asyncio.to_thread(_load_ca, options, cp, cluster)
        authenticator = _authenticator(options, cluster)
        servers = await _serve(cp, options, ca, authenticator)
        state.ads = servers[0].ads
        state.waiting = ""
        if cluster is not None:
            cluster.start(None if ca is None else ca.roots_pem())
            await cluster.after(first, model)
        rejected = 0  # problems of the last rejected reload, until a valid one
        async for change in changes:
            if change.model is None:
                cp.metrics.reloads.labels("invalid").inc()
                rejected = len(change.problems)
                continue
            await cp.apply(change.model, seen_at=change.seen_at)
            if cluster is not None:
                await cluster.after(change, cp.model)
            if rejected and cp.model == change.model:
                log.warning("config valid again: serving %s (the %d problem(s) reported "
                            "before are resolved)", cp.summary(), rejected)
                rejected = 0
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if admin is not None:
            admin.stop()
        for server in servers:
            with contextlib.suppress(asyncio.CancelledError):
                await server.stop(grace=1.0)
        if cluster is not None:
            await asyncio.to_thread(cluster.close)


@dataclass
class _Serving:
    """What the admin endpoint shows, as it comes up."""

    cp: ControlPlane | None = None
    ads: Any = None
    waiting: str = "starting"


def _report(change: Any, options: ControlPlaneOptions) -> None:
    """Log the objects left out of a Kubernetes model (their status says it too)."""
    for problem in change.problems:
        log.warning("left out: %s", problem)


def _load_ca(options: ControlPlaneOptions, cp: ControlPlane,
             cluster: Any) -> CertificateAuthority | None:
    """The CA: in ``--ca-dir``, else (Kubernetes mode) in its Secret, else none."""
    trust_domain = cp.model.mesh_config.trust_domain
    if options.ca_dir is not None:
        return CertificateAuthority.load_or_create(DirectoryCaStore(options.ca_dir),
                                                   trust_domain=trust_domain)
    if cluster is not None:
        return CertificateAuthority.load_or_create(cluster.ca_store(),
                                                   trust_domain=trust_domain)
    return None


def _authenticator(options: ControlPlaneOptions, cluster: Any) -> Any:
    """Who may get certificates: the ``--token-file``, else (Kubernetes mode)
    TokenReview, else nobody."""
    if options.token_file is not None:
        return StaticTokens.from_file(options.token_file)
    if cluster is not None:
        return cluster.authenticator()
    return None


async def _serve(cp: ControlPlane, options: ControlPlaneOptions,
                 ca: CertificateAuthority | None, authenticator: Any) -> list[Any]:
    """Start the xDS server (first) and, on its own port if it has one, the CA's."""
    services = [] if ca is None else [certificate_service(cp, ca, authenticator)]
    ca_address = options.certificate_address
    if options.insecure:
        log.warning("--insecure: xDS%s in plaintext, and any client may subscribe and "
                    "claim any namespace. Never in a cluster: anyone on the network reads "
                    "or rewrites the mesh's configuration%s",
                    " and the CA" if services else "",
                    " and steals the tokens sent to the CA" if services else "")
        shared = ca_address == options.xds_address
        server, port = await serve(options.xds_address, cp.cache, cp.callbacks(),
                                   services=services if shared else ())
        log.info("xDS (ADS) serving on %s:%d in plaintext%s", options.xds_address[0], port,
                 ", with the CA" if shared and services else "")
        servers = [server]
        if services and not shared:
            ca_server, ca_port = await serve_services(ca_address, services,
                                                      what="serve the CA")
            log.info("CA serving on %s:%d in plaintext", ca_address[0], ca_port)
            servers.append(ca_server)
        return servers
    assert ca is not None  # options.check()
    serving = serving_certificates(options, ca)
    server, port = await serve(options.xds_address, cp.cache, cp.callbacks(),
                               credentials=serving.credentials(require_client_auth=True),
                               authenticated=True)
    log.info("xDS (ADS) serving on %s:%d over mTLS: clients prove their mesh identity",
             options.xds_address[0], port)
    try:
        ca_server, ca_port = await serve_services(
            ca_address, services, credentials=serving.credentials(), what="serve the CA")
    except BaseException:
        await server.stop(grace=0)
        raise
    log.info("CA serving on %s:%d over TLS", ca_address[0], ca_port)
    return [server, ca_server]


def certificate_service(cp: ControlPlane, ca: CertificateAuthority,
                        authenticator: Any) -> CertificateService:
    """The CA behind the certificate service; ``authenticator`` (bootstrap tokens, or
    TokenReview) says who callers are. The MeshConfig in force sets the trust domain
    at start and the certificate TTL per request."""
    if authenticator is None:
        log.warning("CA enabled without --token-file: certificate requests are refused")
    log.info("CA %s (trust domain %s)", ca.cert.subject.rfc4514_string(), ca.trust_domain)
    return CertificateService(
        ca, authenticator,
        ttl=lambda: dt.timedelta(seconds=cp.model.mesh_config.certificate_ttl),
        on_result=lambda result: cp.metrics.certificates.labels(result).inc())


def serving_certificates(options: ControlPlaneOptions,
                         ca: CertificateAuthority) -> ServingCertificates:
    """The serving certificate of the xDS and CA ports, from ``ca`` (the CA in
    ``options.ca_dir``) for ``options.tls_names`` (default: the in-cluster Service
    name, localhost, the loopback addresses and the listen hosts), re-issued at
    half-life."""
    hosts = {options.xds_address[0], options.certificate_address[0]}
    names = options.tls_names or (
        *DEFAULT_SERVING_NAMES,
        *sorted(h for h in hosts if h not in ("0.0.0.0", "::", "")))
    serving = ServingCertificates(ca, names)
    log.info("TLS: serving certificate for %s, valid until %s", ", ".join(serving.names),
             serving.not_after.isoformat())
    return serving


def _admin_views(state: _Serving, loop: asyncio.AbstractEventLoop) -> AdminViews:
    def on_loop(fn: Any) -> Any:
        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    def ready() -> tuple[bool, str]:
        return (False, state.waiting) if state.waiting else (True, "ok")

    def metrics() -> bytes:
        return state.cp.metrics.render() if state.cp is not None else b""

    def dump(node_id: str | None) -> dict[str, Any] | None:
        def find() -> dict[str, Any] | None:
            cp, ads = state.cp, state.ads
            node = ads.registry.node(node_id) if node_id and ads is not None else None
            if node is None or cp is None:
                return None
            out = cp.config_dump(group_of(node))
            out["node"] = node_id
            return out

        return on_loop(find)

    return AdminViews(ready=ready, metrics=metrics, config_dump=dump)
