"""Translation: a :class:`~xds_server.model.MeshModel` → xDS v3 resources per node group.

Pure functions, no I/O: the same model and group always give the same resources.
One builder module per output (``listeners``, ``routes``, ``clusters``,
``endpoints``); ``names`` holds the resource names other packages rely on.

Example::

    from xds_server.node import NodeGroup
    from xds_server.resources import CLUSTER
    resources = build_resources(model, NodeGroup(kind="grpc", namespace="default"))
    resources[CLUSTER]["outbound|50051||reviews.default.svc.cluster.local"]
"""

from __future__ import annotations

from google.protobuf.message import Message

from xds_server.model import MeshModel
from xds_server.node import NodeGroup
from xds_server.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_server.translate.clusters import clusters
from xds_server.translate.endpoints import load_assignments
from xds_server.translate.listeners import (
    envoy_outbound_listener,
    grpc_api_listeners,
    grpc_server_listeners,
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
from xds_server.translate.routes import envoy_route_config, grpc_route_configs

__all__ = [
    "ENVOY_OUTBOUND_LISTENER",
    "ENVOY_OUTBOUND_ROUTE",
    "SERVER_LISTENER_TEMPLATE",
    "build_resources",
    "cluster_name",
    "default_service_port",
    "listener_names",
    "route_config_name",
    "server_listener_name",
]


def build_resources(model: MeshModel, group: NodeGroup) -> dict[str, dict[str, Message]]:
    """Every resource nodes of ``group`` get: type URL → resource name → message.

    Proxyless gRPC and meshlib nodes get ``api_listener``s (one per target form), the
    xDS-server Listeners and a RouteConfiguration per Service port; Envoy gets one
    ``outbound`` socket Listener and one RouteConfiguration. Clusters and endpoints are
    the same for every kind. All four type URLs are always present.
    """
    listeners: dict[str, Message]
    routes: dict[str, Message]
    if group.kind == "envoy":
        listeners = {ENVOY_OUTBOUND_LISTENER: envoy_outbound_listener(model, group)}
        routes = {ENVOY_OUTBOUND_ROUTE: envoy_route_config(model, group)}
    else:
        listeners = {**grpc_api_listeners(model, group), **grpc_server_listeners(model)}
        routes = dict(grpc_route_configs(model, group))
    return {
        CLUSTER: dict(clusters(model)),
        ENDPOINT: dict(load_assignments(model)),
        LISTENER: listeners,
        ROUTE: routes,
    }
