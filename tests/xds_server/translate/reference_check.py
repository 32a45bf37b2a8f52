"""A test-side reference check: every RDS/CDS/EDS name the output points at exists."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.message import Message

from xds_server.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

__all__ = ["hcm_of", "hcms_of", "missing_references"]


def hcms_of(listener: listener_pb2.Listener) -> Iterator[hcm_pb2.HttpConnectionManager]:
    """The HttpConnectionManagers of an api_listener or of a socket listener's chains."""
    if listener.HasField("api_listener"):
        hcm = hcm_pb2.HttpConnectionManager()
        assert listener.api_listener.api_listener.Unpack(hcm)
        yield hcm
    for chain in listener.filter_chains:
        for f in chain.filters:
            hcm = hcm_pb2.HttpConnectionManager()
            assert f.typed_config.Unpack(hcm), f.name
            yield hcm


def hcm_of(listener: listener_pb2.Listener) -> hcm_pb2.HttpConnectionManager:
    (hcm,) = hcms_of(listener)
    return hcm


def _clusters_of(config: route_pb2.RouteConfiguration) -> Iterator[str]:
    for vhost in config.virtual_hosts:
        for route in vhost.routes:
            if route.route.cluster:
                yield route.route.cluster
            for weighted in route.route.weighted_clusters.clusters:
                yield weighted.name


def missing_references(resources: Mapping[str, Mapping[str, Message]]) -> dict[str, set[str]]:
    """Type URL → names referenced (RDS from listeners, CDS from routes, EDS from
    clusters) but absent from ``resources``; empty when consistent."""
    wanted: dict[str, set[str]] = {ROUTE: set(), CLUSTER: set(), ENDPOINT: set()}
    for listener in resources.get(LISTENER, {}).values():
        for hcm in hcms_of(listener):  # type: ignore[arg-type]
            if hcm.HasField("rds"):
                wanted[ROUTE].add(hcm.rds.route_config_name)
            else:
                wanted[CLUSTER].update(_clusters_of(hcm.route_config))
    for config in resources.get(ROUTE, {}).values():
        wanted[CLUSTER].update(_clusters_of(config))  # type: ignore[arg-type]
    for cluster in resources.get(CLUSTER, {}).values():
        eds = cluster.eds_cluster_config  # type: ignore[attr-defined]
        wanted[ENDPOINT].add(eds.service_name or cluster.name)  # type: ignore[attr-defined]
    missing = {t: names - set(resources.get(t, {})) for t, names in wanted.items()}
    return {t: names for t, names in missing.items() if names}
