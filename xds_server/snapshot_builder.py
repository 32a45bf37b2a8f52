"""Build a group's snapshot from a model, translating only the Services that changed.

:func:`xds_server.translate.build_resources` translates a whole model; at 1,000
Services that takes hundreds of milliseconds, while a typical edit (a route's
weights, one EndpointSlice) touches one Service. :class:`SnapshotBuilder` keeps each
Service's versioned resources (:func:`~xds_server.translate.service_resources`) for as
long as the inputs they are built from stay the same: the Service, its EndpointSlices,
the routes attached to it, the Services and TrafficPolicies those routes name, its own
TrafficPolicy and the MeshConfig. The output equals ``build_resources``'s
(``tests/xds_server/test_snapshot_builder.py`` checks it).

Inputs are compared by identity first, then by value: ``ConfigLoader`` hands back
the very same objects for files that did not change, so the common case costs a
handful of ``is`` checks per Service.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import Message

from xds_server.cache import Resource, Snapshot
from xds_server.model import MeshModel, Service
from xds_server.node import NodeGroup
from xds_server.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_server.translate import service_resources, shared_resources

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
        by_type: dict[str, dict[str, Resource]] = {t: {} for t in (CLUSTER, ENDPOINT, LISTENER,
                                                                   ROUTE)}
        virtual_hosts: list[object] = []
        live: set[tuple[str, str, str]] = set()
        for service in model.services:
            key = (group.key, service.namespace, service.name)
            live.add(key)
            inputs = _inputs(model, service)
            entry = self._entries.get(key)
            if entry is None or not _same(entry.inputs, inputs):
                entry = self._entries[key] = _translate(model, service, group, inputs)
            for res in entry.resources:
                by_type[res.type_url][res.name] = res
            # Services may share endpoints (reviews and reviews-v1): one Listener each.
            for res in entry.server_listeners:
                by_type[LISTENER][res.name] = res
            virtual_hosts.extend(entry.virtual_hosts)
        for key in [k for k in self._entries if k[0] == group.key and k not in live]:
            del self._entries[key]
        shared = shared_resources(model, group, virtual_hosts)  # type: ignore[arg-type]
        for type_url, by_name in shared.items():
            by_type[type_url].update(_versioned(type_url, by_name))
        return Snapshot(resources=by_type)


def _translate(model: MeshModel, service: Service, group: NodeGroup,
               inputs: tuple[object, ...]) -> _Entry:
    part = service_resources(model, service, group)
    own = [res for type_url, by_name in part.resources.items()
           for res in _versioned(type_url, by_name).values()]
    servers = _versioned(LISTENER, part.server_listeners).values()
    return _Entry(inputs=inputs, resources=tuple(own), server_listeners=tuple(servers),
                  virtual_hosts=part.virtual_hosts)


def _versioned(type_url: str, by_name: Mapping[str, Message]) -> dict[str, Resource]:
    return {name: Resource.from_message(type_url, name, msg) for name, msg in by_name.items()}


def _inputs(model: MeshModel, service: Service) -> tuple[object, ...]:
    """Everything ``service``'s resources are built from."""
    backends: list[object] = []
    for route in model.routes_for(service):
        for rule in route.rules:
            for ref in rule.backend_refs:
                backend = model.service(ref.namespace, ref.name)
                backends.append(backend)
                backends.append(model.traffic_policy_for(backend) if backend else None)
    return (
        service,
        model.endpoint_slices_for(service),
        model.routes_for(service),
        model.traffic_policy_for(service),
        tuple(backends),
        model.mesh_config,
    )


def _same(old: tuple[object, ...], new: tuple[object, ...]) -> bool:
    return all(a is b or a == b for a, b in zip(old, new, strict=True))
