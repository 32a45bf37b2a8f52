"""Hand-built xDS resources and nodes for cache and server tests (no translator)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, struct_pb2, wrappers_pb2
from google.protobuf.message import Message

from xds_server.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

__all__ = [
    "cluster",
    "grpc_node",
    "load_assignment",
    "mesh",
    "names_of",
    "rds_listener",
    "route_config",
    "socket_listener",
]


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _hcm(route_name: str) -> hcm_pb2.HttpConnectionManager:
    ads = config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )
    return hcm_pb2.HttpConnectionManager(
        stat_prefix=route_name,
        rds=hcm_pb2.Rds(config_source=ads, route_config_name=route_name),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router",
                                         typed_config=_pack(router_pb2.Router()))],
    )


def rds_listener(name: str, route_name: str | None = None) -> listener_pb2.Listener:
    """A gRPC-style ``api_listener`` Listener pointing at RDS ``route_name``."""
    hcm = _hcm(route_name or name)
    return listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=_pack(hcm)))


def socket_listener(name: str, route_name: str, port: int = 15001) -> listener_pb2.Listener:
    """An Envoy socket Listener whose filter chain's HCM points at RDS ``route_name``."""
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address="0.0.0.0", port_value=port)),
        filter_chains=[listener_components_pb2.FilterChain(filters=[
            listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager",
                typed_config=_pack(_hcm(route_name)))])],
    )


def route_config(name: str, clusters: Mapping[str, int] | str) -> route_pb2.RouteConfiguration:
    """One virtual host, one catch-all route to a cluster or weighted clusters."""
    if isinstance(clusters, str):
        action = route_components_pb2.RouteAction(cluster=clusters)
    else:
        action = route_components_pb2.RouteAction(
            weighted_clusters=route_components_pb2.WeightedCluster(clusters=[
                route_components_pb2.WeightedCluster.ClusterWeight(
                    name=c, weight=wrappers_pb2.UInt32Value(value=w))
                for c, w in clusters.items()]))
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[route_components_pb2.VirtualHost(
            name=name, domains=["*"],
            routes=[route_components_pb2.Route(
                match=route_components_pb2.RouteMatch(prefix=""), route=action)])],
    )


def cluster(name: str, service_name: str = "") -> cluster_pb2.Cluster:
    """An EDS cluster over ADS."""
    ads = config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )
    return cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads, service_name=service_name),
    )


def load_assignment(
    name: str, ports: Iterable[int] = (50051,)
) -> endpoint_pb2.ClusterLoadAssignment:
    """One weighted locality with 127.0.0.1 endpoints on ``ports``."""
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(
            load_balancing_weight=wrappers_pb2.UInt32Value(value=1),
            lb_endpoints=[endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(
                        address="127.0.0.1", port_value=p))))
                for p in ports])],
    )


def mesh(
    services: Mapping[str, Mapping[str, Iterable[int]]] | None = None,
    *,
    weights: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, dict[str, Message]]:
    """``{type_url: {name: message}}`` for services, each a listener + route + clusters.

    ``services`` maps a service to its clusters and their endpoint ports; default: a
    ``reviews`` service with clusters ``reviews-v1`` and ``reviews-v2``.
    """
    if services is None:
        services = {"reviews": {"reviews-v1": (50051,), "reviews-v2": (50052,)}}
    out: dict[str, dict[str, Message]] = {LISTENER: {}, ROUTE: {}, CLUSTER: {}, ENDPOINT: {}}
    for service, clusters in services.items():
        w = (weights or {}).get(service) or dict.fromkeys(clusters, 1)
        out[LISTENER][service] = rds_listener(service)
        out[ROUTE][service] = route_config(service, w)
        for name, ports in clusters.items():
            out[CLUSTER][name] = cluster(name)
            out[ENDPOINT][name] = load_assignment(name, ports)
    return out


def grpc_node(node_id: str = "client-1", namespace: str = "default") -> base_pb2.Node:
    """A proxyless gRPC node (group ``grpc/<namespace>``)."""
    meta = struct_pb2.Struct()
    meta.update({"NAMESPACE": namespace})
    return base_pb2.Node(id=node_id, metadata=meta, user_agent_name="grpc-python")


_KINDS: dict[str, type[Message]] = {
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
}


def names_of(response: Message) -> list[str]:
    """Sorted resource names in a DiscoveryResponse or DeltaDiscoveryResponse."""
    names = []
    for item in response.resources:  # type: ignore[attr-defined]
        packed = item.resource if hasattr(item, "resource") else item
        message = _KINDS[packed.type_url]()
        packed.Unpack(message)
        names.append(getattr(message, "cluster_name", "") or message.name)  # type: ignore[attr-defined]
    return sorted(names)
