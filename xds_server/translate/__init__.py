"""Translation: a :class:`~xds_server.model.MeshModel` → xDS v3 resources per node group.

Pure functions, no I/O: the same model and group always give the same resources.
One builder module per output (``listeners``, ``routes``, ``clusters``,
``endpoints``, with ``security`` for mTLS and ``rbac`` for authorization); ``names``
holds the resource names other packages rely on.

Example::

    from xds_server.node import NodeGroup
    from xds_server.resources import CLUSTER
    resources = build_resources(model, NodeGroup(kind="grpc", namespace="default"))
    resources[CLUSTER]["outbound|50051||reviews.default.svc.cluster.local"]
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf.message import Message

from xds_server.model import MeshModel, Service
from xds_server.node import NodeGroup
from xds_server.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_server.translate.clusters import clusters
from xds_server.translate.endpoints import load_assignments
from xds_server.translate.listeners import (
    envoy_outbound_listener,
    grpc_api_listeners,
    grpc_server_listeners,
    server_addresses,
)
from xds_server.translate.names import (
    ENVOY_OUTBOUND_LISTENER,
    ENVOY_OUTBOUND_ROUTE,
    SERVER_LISTENER_TEMPLATE,
    cluster_name,
    default_service_port,
    listener_names,
    route_config_name,
    server_listener_name,
)
from xds_server.translate.routes import grpc_route_configs, virtual_host

__all__ = [
    "ENVOY_OUTBOUND_LISTENER",
    "ENVOY_OUTBOUND_ROUTE",
    "SERVER_LISTENER_TEMPLATE",
    "ServiceResources",
    "build_resources",
    "cluster_name",
    "default_service_port",
    "listener_names",
    "route_config_name",
    "server_listener_name",
    "service_resources",
    "shared_resources",
]


@dataclass(frozen=True, slots=True)
class ServiceResources:
    """What one Service contributes to a group's resources.

    ``resources`` are its own (type URL → name → message); ``server_addresses`` are the
    addresses of its xDS-server Listeners (shared with the other Services there, so
    built by :func:`grpc_server_listeners` or ``grpc_server_listener``, not here);
    ``virtual_hosts`` are its entries in Envoy's shared ``outbound`` route table.
    """

    resources: dict[str, dict[str, Message]]
    server_addresses: tuple[tuple[str, int], ...]
    virtual_hosts: tuple[rc_pb2.VirtualHost, ...]


def service_resources(model: MeshModel, service: Service, group: NodeGroup
                      ) -> ServiceResources:
    """The part of :func:`build_resources` that comes from ``service``.

    It depends on the Service (its annotations give its identities), its EndpointSlices,
    its AccessPolicies (its Clusters' mTLS), the routes attached to it, the Services and
    TrafficPolicies those routes name, its own TrafficPolicy and the MeshConfig — which
    is what lets ``SnapshotBuilder`` translate only what changed.
    """
    only = (service,)
    resources: dict[str, dict[str, Message]] = {
        CLUSTER: dict(clusters(model, only, tls=group.tls)),
        ENDPOINT: dict(load_assignments(model, only)),
        LISTENER: {},
        ROUTE: {},
    }
    if group.kind == "envoy":
        hosts = tuple(virtual_host(model, service, port, group.namespace)
                      for port in service.distinct_ports)
        return ServiceResources(resources, (), hosts)
    resources[LISTENER] = dict(grpc_api_listeners(model, group, only))
    resources[ROUTE] = dict(grpc_route_configs(model, group, only))
    return ServiceResources(resources, server_addresses(model, service), ())


def shared_resources(model: MeshModel, group: NodeGroup,
                     virtual_hosts: list[rc_pb2.VirtualHost]) -> dict[str, dict[str, Message]]:
    """What belongs to no one Service: Envoy's ``outbound`` Listener and route table."""
    if group.kind != "envoy":
        return {}
    table = route_pb2.RouteConfiguration(name=ENVOY_OUTBOUND_ROUTE, virtual_hosts=virtual_hosts)
    return {
        LISTENER: {ENVOY_OUTBOUND_LISTENER: envoy_outbound_listener(model, group)},
        ROUTE: {ENVOY_OUTBOUND_ROUTE: table},
    }


def build_resources(model: MeshModel, group: NodeGroup) -> dict[str, dict[str, Message]]:
    """Every resource nodes of ``group`` get: type URL → resource name → message.

    Proxyless gRPC and meshlib nodes get ``api_listener``s (one per target form), the
    xDS-server Listeners and a RouteConfiguration per Service port; Envoy gets one
    ``outbound`` socket Listener and one RouteConfiguration. Clusters and endpoints are
    the same for every kind, except that groups with ``tls`` get mTLS on Clusters and
    server Listeners. All four type URLs are always present.
    """
    out: dict[str, dict[str, Message]] = {CLUSTER: {}, ENDPOINT: {}, LISTENER: {}, ROUTE: {}}
    hosts: list[rc_pb2.VirtualHost] = []
    for service in model.services:
        part = service_resources(model, service, group)
        for type_url, by_name in part.resources.items():
            out[type_url].update(by_name)
        hosts.extend(part.virtual_hosts)
    if group.kind != "envoy":
        out[LISTENER].update(grpc_server_listeners(model, group))
    for type_url, by_name in shared_resources(model, group, hosts).items():
        out[type_url].update(by_name)
    return out
