"""Build a group's snapshot from a model, translating only the Services that changed.

:func:`xds_server.translate.build_resources` translates a whole model; at 1,000
Services that takes hundreds of milliseconds, while a typical edit (a route's
weights, one EndpointSlice) touches one Service. :class:`SnapshotBuilder` splits the
model by Service — a Service's resources depend only on the Service, its
EndpointSlices, the routes attached to it, the backends those routes name, its
TrafficPolicy and the MeshConfig — and keeps each Service's versioned resources for
as long as those inputs stay the same. The output equals ``build_resources``'s
(``tests/xds_server/test_snapshot_builder.py`` checks it).

Inputs are compared by identity first, then by value: ``ConfigLoader`` hands back
the very same objects for files that did not change, so the common case costs a
handful of ``is`` checks per Service.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from envoy.config.route.v3 import route_pb2

from xds_server.cache import Resource, Snapshot
from xds_server.model import MeshModel, Service
from xds_server.node import NodeGroup
from xds_server.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_server.translate import ENVOY_OUTBOUND_ROUTE, route_config_name
from xds_server.translate.clusters import clusters
from xds_server.translate.endpoints import load_assignments
from xds_server.translate.listeners import (
    envoy_outbound_listener,
    grpc_api_listeners,
    grpc_server_listeners,
)
from xds_server.translate.routes import grpc_route_configs, virtual_host

__all__ = ["SnapshotBuilder"]


@dataclass(slots=True)
class _Entry:
    inputs: tuple[object, ...]
    resources: tuple[Resource, ...]  # this Service's own resources
    server_listeners: tuple[Resource, ...]  # gRPC xDS-server Listeners of its endpoints
    virtual_hosts: tuple[object, ...]  # Envoy: its VirtualHosts in the shared route table


class SnapshotBuilder:
    """Snapshots per node group, rebuilt incrementally from successive models.

    Example::

        builder = SnapshotBuilder()
        snapshot = builder.build(model, NodeGroup(kind="grpc"))
        snapshot = builder.build(edited_model, NodeGroup(kind="grpc"))  # fast

    One builder serves many groups, from any thread (builds are serialised).
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, str], _Entry] = {}
        self._lock = threading.Lock()

    def forget(self, group_key: str) -> None:
        """Drop what was kept for ``group_key`` (a group that is gone)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == group_key]:
                del self._entries[key]

    def build(self, model: MeshModel, group: NodeGroup) -> Snapshot:
        """The snapshot of ``group`` for ``model``; equal to translating it whole."""
        with self._lock:
            return self._build(model, group)

    def _build(self, model: MeshModel, group: NodeGroup) -> Snapshot:
        resources: list[Resource] = []
        virtual_hosts: list[object] = []
        server_listeners: dict[str, Resource] = {}
        live: set[tuple[str, str, str]] = set()
        for service in model.services:
            key = (group.key, service.namespace, service.name)
            live.add(key)
            inputs = _inputs(model, service)
            entry = self._entries.get(key)
            if entry is None or not _same(entry.inputs, inputs):
                entry = self._translate(model, service, group, inputs)
                self._entries[key] = entry
            resources.extend(entry.resources)
            virtual_hosts.extend(entry.virtual_hosts)
            # Services may share endpoints (reviews and reviews-v1): one Listener each.
            server_listeners.update((r.name, r) for r in entry.server_listeners)
        for key in [k for k in self._entries if k[0] == group.key and k not in live]:
            del self._entries[key]
        if group.kind == "envoy":
            listener = envoy_outbound_listener(model, group)
            resources.append(Resource.from_message(LISTENER, listener.name, listener))
            table = route_pb2.RouteConfiguration(name=ENVOY_OUTBOUND_ROUTE,
                                                 virtual_hosts=virtual_hosts)
            resources.append(Resource.from_message(ROUTE, ENVOY_OUTBOUND_ROUTE, table))
        resources.extend(server_listeners.values())
        # Every type present even when empty, exactly as build_resources gives.
        by_type: dict[str, dict[str, Resource]] = {t: {} for t in (CLUSTER, ENDPOINT, LISTENER,
                                                                   ROUTE)}
        for res in resources:
            by_type[res.type_url][res.name] = res
        return Snapshot(resources=by_type)

    def _translate(self, model: MeshModel, service: Service, group: NodeGroup,
                   inputs: tuple[object, ...]) -> _Entry:
        alone = _sub_model(model, service, with_backends=False)
        routed = _sub_model(model, service, with_backends=True)
        out: list[Resource] = []
        out += _versioned(CLUSTER, clusters(alone).items())
        out += _versioned(ENDPOINT, load_assignments(alone).items())
        hosts: tuple[object, ...] = ()
        servers: list[Resource] = []
        domain = model.mesh_config.cluster_domain
        if group.kind == "envoy":
            hosts = tuple(virtual_host(routed, service, port, group.namespace)
                          for port in service.distinct_ports)
        else:
            out += _versioned(LISTENER, grpc_api_listeners(alone, group).items())
            servers = _versioned(LISTENER, grpc_server_listeners(alone).items())
            own = {route_config_name(service, p.port, cluster_domain=domain)
                   for p in service.distinct_ports}
            out += _versioned(ROUTE, ((name, rc) for name, rc in
                                      grpc_route_configs(routed, group).items() if name in own))
        return _Entry(inputs=inputs, resources=tuple(out), server_listeners=tuple(servers),
                      virtual_hosts=hosts)


def _versioned(type_url: str, items: Iterable[tuple[str, object]]) -> list[Resource]:
    return [Resource.from_message(type_url, name, msg) for name, msg in items]  # type: ignore[arg-type]


def _backends(model: MeshModel, service: Service) -> tuple[Service, ...]:
    """The Services the routes attached to ``service`` send traffic to (that exist)."""
    found: dict[tuple[str, str], Service] = {}
    for route in model.routes_for(service):
        for rule in route.rules:
            for ref in rule.backend_refs:
                backend = model.service(ref.namespace, ref.name)
                if backend is not None and backend.key != service.key:
                    found[backend.key] = backend
    return tuple(found.values())


def _inputs(model: MeshModel, service: Service) -> tuple[object, ...]:
    """Everything ``service``'s resources are built from."""
    return (
        service,
        model.endpoint_slices_for(service),
        model.routes_for(service),
        model.traffic_policy_for(service),
        _backend_refs(model, service),
        model.mesh_config,
    )


def _backend_refs(model: MeshModel, service: Service) -> tuple[object, ...]:
    """Each backend ref of the attached routes: the Service it resolves to (or None) and
    that Service's TrafficPolicy (its RING_HASH header goes into the route)."""
    out: list[object] = []
    for route in model.routes_for(service):
        for rule in route.rules:
            for ref in rule.backend_refs:
                backend = model.service(ref.namespace, ref.name)
                out.append(backend)
                out.append(model.traffic_policy_for(backend) if backend is not None else None)
    return tuple(out)


def _same(old: tuple[object, ...], new: tuple[object, ...]) -> bool:
    return all(a is b or a == b for a, b in zip(old, new, strict=True))


def _sub_model(model: MeshModel, service: Service, *, with_backends: bool) -> MeshModel:
    """The part of ``model`` that ``service``'s resources are built from."""
    backends = _backends(model, service) if with_backends else ()
    policies = (model.traffic_policy_for(s) for s in (service, *backends))
    return MeshModel(
        services=(service, *backends),
        endpoint_slices=model.endpoint_slices_for(service),
        routes=model.routes_for(service),
        traffic_policies=tuple(p for p in policies if p is not None),
        mesh_config=model.mesh_config,
    )

