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
from xds_server.metrics import ControlPlaneMetrics
from xds_server.model import MeshModel
from xds_server.node import NodeGroup, group_of
from xds_server.resources import short_name
from xds_server.server import AdsServer, CallbackFuncs, serve
from xds_server.snapshot_builder import SnapshotBuilder
from xds_server.sources.file_watcher import watch_model
from xds_server.sources.yaml_loader import ConfigLoader

__all__ = ["DEFAULT_GROUP_IDLE_SECONDS", "ControlPlane", "ControlPlaneOptions", "run"]

log = logging.getLogger(__name__)

# How long a node group keeps its snapshot after its last client disconnects.
DEFAULT_GROUP_IDLE_SECONDS = 300.0


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
        self.metrics.snapshot_groups.set(len(self._groups))
        log.info("node group %s: idle, snapshot dropped", key)

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
    """``meshctl control-plane`` flags."""

    config: Path
    xds_address: tuple[str, int] = ("127.0.0.1", 15010)
    admin_address: tuple[str, int] | None = None
    ca_dir: Path | None = None  # the CA's key and certificate (created on first start)
    token_file: Path | None = None  # bootstrap tokens for the certificate service
    tls: bool = False  # serve over TLS with a certificate from the CA (needs ca_dir)
    tls_names: tuple[str, ...] = ()  # names the serving certificate is for (default: see run)
    stop: asyncio.Event | None = field(default=None, compare=False)


async def run(options: ControlPlaneOptions) -> None:
    """Load the config, serve ADS and the admin endpoint, reload on change; until stopped."""
    loader = ConfigLoader(options.config)
    model = await asyncio.to_thread(loader.load)  # invalid at start: fail
    cp = ControlPlane(model)
    cp.snapshot_for(NodeGroup(kind="grpc"))  # the common group, built before clients come
    # The loaded config lives as long as the process: keep it out of the collector's
    # full passes, which otherwise add tens of ms to pushes at 1,000 Services.
    gc.freeze()
    loop = asyncio.get_running_loop()
    ca = None if options.ca_dir is None else CertificateAuthority.load_or_create(
        DirectoryCaStore(options.ca_dir), trust_domain=cp.model.mesh_config.trust_domain)
    services = [] if ca is None else [certificate_service(cp, options, ca)]
    credentials = None if not options.tls else serving_credentials(options, ca)
    server, port = await serve(options.xds_address, cp.cache, cp.callbacks(),
                               services=services, credentials=credentials)
    ads: AdsServer = server.ads  # type: ignore[attr-defined]
    log.info("xDS (ADS) serving on %s:%d%s", options.xds_address[0], port,
             " over TLS" if options.tls else "")
    admin = None
    stop = options.stop or asyncio.Event()
    signals = []
    try:
        if options.admin_address is not None:
            admin = AdminServer(options.admin_address, _admin_views(cp, ads, loop))
            admin.start()
            log.info("admin on %s:%d", options.admin_address[0], admin.port)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not main thread
                loop.add_signal_handler(sig, stop.set)
                signals.append(sig)
        rejected = 0  # problems of the last rejected reload, until a valid one
        async for change in watch_model(options.config, loader=loader, stop_event=stop):
            if change.model is None:
                cp.metrics.reloads.labels("invalid").inc()
                rejected = len(change.problems)
                continue
            await cp.apply(change.model, seen_at=change.seen_at)
            if rejected and cp.model == change.model:
                log.warning("config valid again: serving %s (the %d problem(s) reported "
                            "before are resolved)", cp.summary(), rejected)
                rejected = 0
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if admin is not None:
            admin.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await server.stop(grace=1.0)


def certificate_service(cp: ControlPlane, options: ControlPlaneOptions,
                        ca: CertificateAuthority) -> CertificateService:
    """The CA (kept in ``options.ca_dir``) behind the certificate service; tokens from
    ``options.token_file`` authenticate callers. The MeshConfig in force sets the trust
    domain at start and the certificate TTL per request."""
    tokens = None if options.token_file is None else StaticTokens.from_file(options.token_file)
    if tokens is None:
        log.warning("CA enabled without --token-file: certificate requests are refused")
    log.info("CA %s (trust domain %s) in %s", ca.cert.subject.rfc4514_string(),
             ca.trust_domain, options.ca_dir)
    return CertificateService(
        ca, tokens,
        ttl=lambda: dt.timedelta(seconds=cp.model.mesh_config.certificate_ttl),
        on_result=lambda result: cp.metrics.certificates.labels(result).inc())


def serving_credentials(options: ControlPlaneOptions,
                        ca: CertificateAuthority | None) -> Any:
    """TLS credentials for the xDS + CA port: a serving certificate from ``ca`` (the CA
    in ``options.ca_dir``) for ``options.tls_names`` (default: the in-cluster Service
    name, localhost, the loopback addresses and the listen host), re-issued at
    half-life."""
    if ca is None:
        raise ValueError("TLS needs the CA (ca_dir): it issues the serving certificate")
    host = options.xds_address[0]
    names = options.tls_names or (
        *DEFAULT_SERVING_NAMES, *(() if host in ("0.0.0.0", "::", "") else (host,)))
    serving = ServingCertificates(ca, names)
    log.info("TLS: serving certificate for %s, valid until %s", ", ".join(serving.names),
             serving.not_after.isoformat())
    return serving.credentials()


def _admin_views(cp: ControlPlane, ads: AdsServer, loop: asyncio.AbstractEventLoop) -> AdminViews:
    def on_loop(fn: Any) -> Any:
        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    def dump(node_id: str | None) -> dict[str, Any] | None:
        def find() -> dict[str, Any] | None:
            node = ads.registry.node(node_id) if node_id else None
            if node is None:
                return None
            out = cp.config_dump(group_of(node))
            out["node"] = node_id
            return out

        return on_loop(find)

    return AdminViews(
        ready=lambda: (True, "ok"),
        metrics=cp.metrics.render,
        config_dump=dump,
    )
