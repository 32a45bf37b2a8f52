"""Build a group's snapshot from a model, translating only the Services that changed.

:func:`xds_server.translate.build_resources` translates a whole model; at 1,000
Services that takes hundreds of milliseconds, while a typical edit (a route's
weights, one EndpointSlice) touches one Service. :class:`SnapshotBuilder` keeps each
Service's versioned resources (:func:`~xds_server.translate.service_resources`) for as
long as the inputs they are built from stay the same: the Service (with its
annotations), its EndpointSlices, its AccessPolicies, the routes attached to it, the
Services and TrafficPolicies those routes name, its own TrafficPolicy and the
MeshConfig. xDS-server Listeners are shared by the Services whose endpoints use their
address, so they are kept apart, per address, for as long as their
:class:`~xds_server.translate.security.InboundSecurity` stays the same. The output
equals ``build_resources``'s (``tests/xds_server/test_snapshot_builder.py`` checks it).

Inputs are compared by identity first, then by value: ``ConfigLoader`` hands back
the very same objects for files that did not change, so the common case costs a
handful of ``is`` checks per Service.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf import any_pb2
from google.protobuf.message import Message

from xds_server.cache import Resource, Snapshot
from xds_server.model import AccessPolicy, MeshModel, Service
from xds_server.node import NodeGroup
from xds_server.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_server.translate import service_resources, shared_resources
from xds_server.translate.listeners import grpc_server_listener, server_hcm
from xds_server.translate.security import (
    InboundSecurity,
    access_policies_by_service,
    merge_inbound,
    service_inbound_security,
)

__all__ = ["SnapshotBuilder"]


@dataclass(slots=True)
class _Entry:
    inputs: tuple[object, ...]
    resources: tuple[Resource, ...]  # this Service's own resources
    server_addresses: tuple[tuple[str, int], ...]  # of its gRPC xDS-server Listeners
    virtual_hosts: tuple[object, ...]  # Envoy: its VirtualHosts in the shared route table


@dataclass(slots=True)
class _ServerListener:
    security: InboundSecurity
    resource: Resource


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
        # group key → (address, port) → its server Listener
        self._listeners: dict[str, dict[tuple[str, int], _ServerListener]] = {}
        self._lock = threading.Lock()

    def forget(self, group_key: str) -> None:
        """Drop what was kept for ``group_key`` (a group that is gone)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == group_key]:
                del self._entries[key]
            self._listeners.pop(group_key, None)

    def build(self, model: MeshModel, group: NodeGroup) -> Snapshot:
        """The snapshot of ``group`` for ``model``; equal to translating it whole."""
        with self._lock:
            return self._build(model, group)

    def _build(self, model: MeshModel, group: NodeGroup) -> Snapshot:
        by_type: dict[str, dict[str, Resource]] = {t: {} for t in (CLUSTER, ENDPOINT, LISTENER,
                                                                   ROUTE)}
        virtual_hosts: list[object] = []
        live: set[tuple[str, str, str]] = set()
        group_key = group.key
        policies = access_policies_by_service(model)  # one pass, not one per Service
        # Services may share endpoints (reviews and reviews-v1): one Listener each.
        security_at: dict[tuple[str, int], list[InboundSecurity]] = {}
        for service in model.services:
            key = (group_key, service.namespace, service.name)
            live.add(key)
            own = policies.get(service.key, ())
            inputs = _inputs(model, service, own)
            entry = self._entries.get(key)
            if entry is None or not _same(entry.inputs, inputs):
                entry = self._entries[key] = _translate(model, service, group, inputs)
            for res in entry.resources:
                by_type[res.type_url][res.name] = res
            if entry.server_addresses:
                security = service_inbound_security(model, service, own)
                for address in entry.server_addresses:
                    security_at.setdefault(address, []).append(security)
            virtual_hosts.extend(entry.virtual_hosts)
        for key in [k for k in self._entries if k[0] == group_key and k not in live]:
            del self._entries[key]
        by_type[LISTENER].update(self._server_listeners(group, security_at))
        shared = shared_resources(model, group, virtual_hosts)  # type: ignore[arg-type]
        for type_url, by_name in shared.items():
            by_type[type_url].update(_versioned(type_url, by_name))
        return Snapshot(resources=by_type)

    def _server_listeners(self, group: NodeGroup,
                          security_at: dict[tuple[str, int], list[InboundSecurity]]
                          ) -> dict[str, Resource]:
        """One Listener per address, rebuilt only when its InboundSecurity changed."""
        old = self._listeners.get(group.key, {})
        new: dict[tuple[str, int], _ServerListener] = {}
        out: dict[str, Resource] = {}
        hcms: dict[InboundSecurity, any_pb2.Any] = {}  # a Service's addresses share one
        for (address, port), parts in security_at.items():
            security = merge_inbound(parts)
            kept = old.get((address, port))
            if kept is None or kept.security != security:
                if security not in hcms:
                    hcms[security] = server_hcm(security)
                listener = grpc_server_listener(address, port, security, tls=group.tls,
                                                hcm=hcms[security])
                kept = _ServerListener(security,
                                       Resource.from_message(LISTENER, listener.name, listener))
            new[(address, port)] = kept
            out[kept.resource.name] = kept.resource
        self._listeners[group.key] = new
        return out


def _translate(model: MeshModel, service: Service, group: NodeGroup,
               inputs: tuple[object, ...]) -> _Entry:
    part = service_resources(model, service, group)
    own = [res for type_url, by_name in part.resources.items()
           for res in _versioned(type_url, by_name).values()]
    return _Entry(inputs=inputs, resources=tuple(own), server_addresses=part.server_addresses,
                  virtual_hosts=part.virtual_hosts)


def _versioned(type_url: str, by_name: Mapping[str, Message]) -> dict[str, Resource]:
    return {name: Resource.from_message(type_url, name, msg) for name, msg in by_name.items()}


def _inputs(model: MeshModel, service: Service, policies: tuple[AccessPolicy, ...]
            ) -> tuple[object, ...]:
    """Everything ``service``'s resources are built from.

    Its own AccessPolicies decide its Clusters' mTLS (its annotations, its identities,
    come with the Service). Backends' AccessPolicies are not inputs: a route names
    backend Clusters, which belong to (and are built with) the backend Services.
    """
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
        policies,
        tuple(backends),
        model.mesh_config,
    )


def _same(old: tuple[object, ...], new: tuple[object, ...]) -> bool:
    return all(a is b or a == b for a, b in zip(old, new, strict=True))
