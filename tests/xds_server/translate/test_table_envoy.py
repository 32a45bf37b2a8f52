"""Table tests of the Envoy node group: one ``outbound`` socket Listener and RDS table.

Tests named ``test_bug_*`` fail on purpose: each pins a translation bug (see its
docstring) and passes once the bug is fixed.
"""

from __future__ import annotations

from collections import Counter

import pytest
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from tests.xds_server.translate.model_builders import (
    backend,
    endpoint,
    endpoint_slice,
    grpc_route,
    mesh,
    policy,
    port,
    rule,
    service,
)
from tests.xds_server.translate.reference_check import hcm_of
from xds_server.model import MeshConfig, RetryPolicy
from xds_server.node import NodeGroup
from xds_server.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_server.translate import build_resources, listener_names

HCM = hcm_pb2.HttpConnectionManager
REVIEWS = service("reviews", port(50051), port(8080, "http", "http"))
RATINGS = service("ratings", port(9090), namespace="shop")


def model_of(*extra, mesh_config=None):
    return mesh(REVIEWS, RATINGS, service("reviews-v1"),
                endpoint_slice(REVIEWS, endpoint("10.0.0.1"), port=8080),
                endpoint_slice(RATINGS, endpoint("10.0.1.1"), port=7070),
                grpc_route("reviews", rule(backend("reviews-v1", port=50051)), parent_port=50051),
                policy("reviews", timeout=2.0, retries=RetryPolicy()),
                *extra, mesh_config=mesh_config)


def envoy(model=None, namespace="default", outbound_port=None):
    group = NodeGroup(kind="envoy", namespace=namespace, outbound_port=outbound_port)
    return build_resources(model or model_of(), group)


# ----------------------------------------------------------------------------- listener


@pytest.mark.parametrize(("outbound_port", "sidecar_port", "expected"), [
    (None, None, 15001),     # MeshConfig default
    (None, 16001, 16001),    # MeshConfig sidecar_outbound_port
    (15999, None, 15999),    # the node's OUTBOUND_PORT metadata wins
    (15999, 16001, 15999),
])
def test_single_outbound_listener_port(outbound_port, sidecar_port, expected):
    config = MeshConfig(sidecar_outbound_port=sidecar_port) if sidecar_port else None
    out = envoy(model_of(mesh_config=config), outbound_port=outbound_port)
    assert list(out[LISTENER]) == ["outbound"]
    address = out[LISTENER]["outbound"].address.socket_address
    assert (address.address, address.port_value) == ("0.0.0.0", expected)


@pytest.mark.parametrize("namespace", ["default", "shop"])
def test_outbound_listener_shape(namespace):
    (listener,) = envoy(namespace=namespace)[LISTENER].values()
    assert listener.name == "outbound"
    assert listener.traffic_direction == base_pb2.OUTBOUND
    assert not listener.HasField("api_listener")
    (chain,) = listener.filter_chains
    assert [f.name for f in chain.filters] == ["envoy.filters.network.http_connection_manager"]
    hcm = hcm_of(listener)
    assert hcm.codec_type == HCM.AUTO
    assert hcm.stat_prefix == "outbound"
    assert hcm.rds.route_config_name == "outbound"
    assert hcm.rds.config_source.HasField("ads")
    assert hcm.rds.config_source.resource_api_version == config_source_pb2.V3
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.fault",
                                                  "envoy.filters.http.router"]
    assert all(f.HasField("typed_config") for f in hcm.http_filters)


def test_no_api_or_server_listeners_for_envoy():
    listeners = envoy()[LISTENER]
    assert not any(lst.HasField("api_listener") for lst in listeners.values())
    assert not any(name.startswith("grpc/server") for name in listeners)


# -------------------------------------------------------------------------------- routes


@pytest.mark.parametrize("namespace", ["default", "shop", "other"])
def test_outbound_route_configuration(namespace):
    model = model_of()
    out = envoy(model, namespace)
    assert list(out[ROUTE]) == ["outbound"]
    table = out[ROUTE]["outbound"]
    assert table.name == "outbound"
    grpc = build_resources(model, NodeGroup(kind="grpc", namespace=namespace))[ROUTE]
    expected = [(svc, p.port) for svc in model.services for p in svc.ports]
    assert [vhost.name for vhost in table.virtual_hosts] == [
        f"{svc.fqdn()}:{number}" for svc, number in expected]
    for vhost, (svc, number) in zip(table.virtual_hosts, expected, strict=True):
        assert tuple(vhost.domains) == listener_names(svc, number, namespace)
        # the same VirtualHost a proxyless client gets for that Service port
        assert vhost == grpc[vhost.name].virtual_hosts[0]


@pytest.mark.parametrize(("namespace", "short"), [
    ("default", {"reviews", "reviews:50051", "reviews:8080", "reviews-v1", "reviews-v1:50051"}),
    ("shop", {"ratings", "ratings:9090"}),
    ("other", set()),
])
def test_short_domains_only_in_the_nodes_namespace(namespace, short):
    domains = {d for v in envoy(namespace=namespace)[ROUTE]["outbound"].virtual_hosts
               for d in v.domains}
    assert {d for d in domains if "." not in d.split(":")[0]} == short


@pytest.mark.parametrize("namespace", ["default", "shop"])
def test_domains_are_unique_across_virtual_hosts(namespace):
    # Envoy rejects a RouteConfiguration with a domain in two virtual hosts.
    vhosts = envoy(namespace=namespace)[ROUTE]["outbound"].virtual_hosts
    domains = Counter(d for v in vhosts for d in v.domains)
    assert [d for d, n in domains.items() if n > 1] == []
    assert len({v.name for v in vhosts}) == len(vhosts)


def test_bug_one_virtual_host_per_port_number():
    """BUG: a Service may list one port number twice with different L4 protocols (DNS:
    ``53/UDP`` and ``53/TCP``; the sources accept it and the model keeps both ports).
    envoy_route_config then emits two VirtualHosts with the same name and domains, and
    Envoy rejects the whole ``outbound`` RouteConfiguration ("Only unique values for
    domains are permitted"), breaking every route of every Envoy. Fix: build one
    VirtualHost (and Cluster, RDS, EDS) per distinct port number, e.g. skip a port whose
    number was already seen (or keep the L4 protocol in the model and skip non-TCP)."""
    dns = service("kube-dns", port(53, "dns", "tcp"), port(53, "dns-tcp", "tcp"),
                  namespace="kube-system")
    vhosts = envoy(mesh(dns))[ROUTE]["outbound"].virtual_hosts
    domains = Counter(d for v in vhosts for d in v.domains)
    assert [d for d, n in domains.items() if n > 1] == []


def test_clusters_and_endpoints_are_the_same_for_every_kind():
    model = model_of()
    grpc = build_resources(model, NodeGroup(kind="grpc"))
    for out in (envoy(model), envoy(model, "shop", 15999)):
        assert out[CLUSTER] == grpc[CLUSTER]
        assert out[ENDPOINT] == grpc[ENDPOINT]
