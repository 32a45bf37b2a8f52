"""Which resources a snapshot's resources point at, and which of those are missing.

Listeners name RouteConfigurations (HttpConnectionManager ``rds``, in ``api_listener``
for gRPC and in filter chains for Envoy); EDS Clusters name ClusterLoadAssignments
(``eds_cluster_config.service_name``, else the cluster name); routes, TCP proxies and
aggregate clusters name Clusters. A snapshot with a dangling name would leave a client
waiting for a resource that never comes, so :meth:`Snapshot.check_consistent` refuses it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import any_pb2

from xds_server.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

__all__ = ["missing_references", "referenced_names"]

_HCM = hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
_TCP_PROXY = tcp_proxy_pb2.TcpProxy.DESCRIPTOR.full_name
_AGGREGATE = aggregate_pb2.ClusterConfig.DESCRIPTOR.full_name


# (type URL, content version) → what that resource references. Versions are content
# hashes, so an entry never goes stale; a snapshot rebuilt after a small change looks
# up almost every resource here instead of unpacking it again.
_REFERENCES: dict[tuple[str, str], dict[str, frozenset[str]]] = {}
_REFERENCES_MAX = 200_000


def referenced_names(resources: Mapping[str, Mapping[str, Any]]) -> dict[str, set[str]]:
    """Names each type URL must contain for ``resources`` (type → name → object with
    a ``message`` and a ``version``) to resolve: ``{ROUTE: {...}, CLUSTER: {...},
    ENDPOINT: {...}}``."""
    wanted: dict[str, set[str]] = {ROUTE: set(), CLUSTER: set(), ENDPOINT: set()}
    if len(_REFERENCES) > _REFERENCES_MAX:
        _REFERENCES.clear()
    for type_url in (LISTENER, ROUTE, CLUSTER):
        for res in resources.get(type_url, {}).values():
            key = (type_url, res.version)
            refs = _REFERENCES.get(key)
            if refs is None:
                refs = _REFERENCES[key] = _references_of(type_url, res.message)
            for target, names in refs.items():
                wanted[target] |= names
    return wanted


def _references_of(type_url: str, message: Any) -> dict[str, frozenset[str]]:
    """What one resource references, by type URL."""
    wanted: dict[str, set[str]] = {ROUTE: set(), CLUSTER: set(), ENDPOINT: set()}
    if type_url == LISTENER:
        for config in _network_filters(message):
            if _is(config, _HCM):
                hcm = hcm_pb2.HttpConnectionManager()
                config.Unpack(hcm)
                if hcm.HasField("rds"):
                    wanted[ROUTE].add(hcm.rds.route_config_name)
                elif hcm.HasField("route_config"):
                    wanted[CLUSTER] |= _route_clusters(hcm.route_config)
            elif _is(config, _TCP_PROXY):
                tcp = tcp_proxy_pb2.TcpProxy()
                config.Unpack(tcp)
                if tcp.cluster:
                    wanted[CLUSTER].add(tcp.cluster)
                wanted[CLUSTER] |= {w.name for w in tcp.weighted_clusters.clusters if w.name}
    elif type_url == ROUTE:
        wanted[CLUSTER] |= _route_clusters(message)
    elif type_url == CLUSTER:
        cluster: cluster_pb2.Cluster = message
        kind = cluster.WhichOneof("cluster_discovery_type")
        if kind == "type" and cluster.type == cluster_pb2.Cluster.EDS:
            wanted[ENDPOINT].add(cluster.eds_cluster_config.service_name or cluster.name)
        elif kind == "cluster_type" and _is(cluster.cluster_type.typed_config, _AGGREGATE):
            aggregate = aggregate_pb2.ClusterConfig()
            cluster.cluster_type.typed_config.Unpack(aggregate)
            wanted[CLUSTER] |= set(aggregate.clusters)
    return {t: frozenset(names) for t, names in wanted.items() if names}


def missing_references(resources: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Type URL → referenced names absent from ``resources`` (only non-empty entries)."""
    missing: dict[str, tuple[str, ...]] = {}
    for type_url, names in referenced_names(resources).items():
        present = resources.get(type_url, {})
        absent = tuple(sorted(n for n in names if n not in present))
        if absent:
            missing[type_url] = absent
    return missing


def _is(config: any_pb2.Any, full_name: str) -> bool:
    return config.type_url.rsplit("/", 1)[-1] == full_name


def _network_filters(listener: listener_pb2.Listener) -> Iterator[any_pb2.Any]:
    if listener.HasField("api_listener"):
        yield listener.api_listener.api_listener
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for network_filter in chain.filters:
            if network_filter.HasField("typed_config"):
                yield network_filter.typed_config


def _route_clusters(config: route_pb2.RouteConfiguration) -> set[str]:
    names: set[str] = set()
    for virtual_host in config.virtual_hosts:
        for route in virtual_host.routes:
            if not route.HasField("route"):
                continue  # redirect, direct_response, filter_action
            action = route.route
            which = action.WhichOneof("cluster_specifier")
            if which == "cluster":
                names.add(action.cluster)
            elif which == "weighted_clusters":
                names |= {w.name for w in action.weighted_clusters.clusters if w.name}
            # cluster_header and cluster specifier plugins name no cluster statically
    return names
