"""Table tests of Listener translation for proxyless gRPC: api_listeners and xDS servers."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2

from tests.xds_server.translate.model_builders import endpoint, endpoint_slice, mesh, port, service
from tests.xds_server.translate.reference_check import hcm_of
from xds_server.model import EndpointPort, EndpointSlice, MeshConfig, Service
from xds_server.node import NodeGroup
from xds_server.resources import LISTENER
from xds_server.translate import build_resources, listener_names, server_listener_name
from xds_server.translate.names import default_service_port

SERVER = "grpc/server?xds.resource.listening_address="
FQDN = "reviews.default.svc.cluster.local"
ROUTER_URL = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
FAULT_URL = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


def api_listeners(model, namespace="default", kind="grpc"):
    out = build_resources(model, NodeGroup(kind=kind, namespace=namespace))[LISTENER]
    return {name: lst for name, lst in out.items() if lst.HasField("api_listener")}


def server_listeners(model):
    out = build_resources(model, NodeGroup(kind="grpc"))[LISTENER]
    return {name.removeprefix(SERVER): lst for name, lst in out.items()
            if name.startswith(SERVER)}


# ----------------------------------------------------------------- api_listener names

TWO_PORTS = service("reviews", port(50051), port(8080, "http", "http"))
OTHER_NS = service("ratings", port(9090), namespace="shop")


@pytest.mark.parametrize(("svc", "group_ns", "expected"), [
    pytest.param(service("reviews"), "default",
                 {f"{FQDN}:50051", FQDN, "reviews.default:50051", "reviews.default",
                  "reviews:50051", "reviews"}, id="own-namespace-all-forms"),
    pytest.param(service("reviews"), "other",
                 {f"{FQDN}:50051", FQDN, "reviews.default:50051", "reviews.default"},
                 id="other-namespace-no-short-names"),
    pytest.param(TWO_PORTS, "default",
                 {f"{FQDN}:50051", FQDN, "reviews.default:50051", "reviews.default",
                  "reviews:50051", "reviews",
                  f"{FQDN}:8080", "reviews.default:8080", "reviews:8080"},
                 id="port-less-forms-only-for-default-port"),
    pytest.param(OTHER_NS, "shop",
                 {"ratings.shop.svc.cluster.local:9090", "ratings.shop.svc.cluster.local",
                  "ratings.shop:9090", "ratings.shop", "ratings:9090", "ratings"},
                 id="short-names-in-the-services-namespace"),
    pytest.param(OTHER_NS, "default",
                 {"ratings.shop.svc.cluster.local:9090", "ratings.shop.svc.cluster.local",
                  "ratings.shop:9090", "ratings.shop"}, id="no-short-names-from-default"),
])
def test_api_listener_names(svc, group_ns, expected):
    assert set(api_listeners(mesh(svc), group_ns)) == expected


def test_meshlib_nodes_get_the_same_api_listeners_as_grpc():
    model = mesh(TWO_PORTS, OTHER_NS)
    grpc = api_listeners(model, "shop", "grpc")
    meshlib = api_listeners(model, "shop", "meshlib")
    assert grpc == meshlib


def test_api_listener_names_follow_the_cluster_domain():
    model = mesh(service("reviews"), mesh_config=MeshConfig(cluster_domain="corp.example"))
    names = set(api_listeners(model))
    assert {"reviews.default.svc.corp.example:50051", "reviews.default.svc.corp.example"} <= names
    assert not any("cluster.local" in n for n in names)
    rds = hcm_of(api_listeners(model)["reviews"]).rds.route_config_name
    assert rds == "reviews.default.svc.corp.example:50051"


@pytest.mark.parametrize(("port", "group_ns", "default_port", "expected"), [
    (50051, "default", None, (f"{FQDN}:50051", FQDN, "reviews.default:50051",
                              "reviews.default", "reviews:50051", "reviews")),
    (50051, "other", None, (f"{FQDN}:50051", FQDN, "reviews.default:50051", "reviews.default")),
    (50051, "default", 8080, (f"{FQDN}:50051", "reviews.default:50051", "reviews:50051")),
    (8080, "default", 8080, (f"{FQDN}:8080", FQDN, "reviews.default:8080", "reviews.default",
                             "reviews:8080", "reviews")),
])
def test_listener_names_function(port, group_ns, default_port, expected):
    assert listener_names(TWO_PORTS, port, group_ns, default_port) == expected


# ----------------------------------------------------------------------- default port


@pytest.mark.parametrize(("ports", "default"), [
    ((port(50051),), 50051),
    ((port(8080, "http", "http"), port(50051)), 50051),          # first grpc, not first port
    ((port(8081, "h2", "http2"), port(50051)), 8081),            # http2 counts as well
    ((port(9000, "tcp", "tcp"), port(8080, "http", "http")), 9000),  # else the first port
    ((port(80, "", "http"),), 80),
    ((), None),                                                  # headless: no ports at all
], ids=["grpc", "grpc-after-http", "http2-first", "no-h2-first-port", "unnamed", "no-ports"])
def test_default_service_port(ports, default):
    svc = Service(name="reviews", namespace="default", ports=ports)
    assert default_service_port(svc) == default
    listeners = api_listeners(mesh(svc))
    if default is None:
        assert listeners == {}
    else:
        assert hcm_of(listeners["reviews"]).rds.route_config_name == f"{FQDN}:{default}"
        assert hcm_of(listeners[FQDN]).rds.route_config_name == f"{FQDN}:{default}"


# --------------------------------------------------------------------- api_listener HCM


@pytest.mark.parametrize(("name", "rds"), [
    ("reviews", f"{FQDN}:50051"),
    ("reviews.default", f"{FQDN}:50051"),
    (FQDN, f"{FQDN}:50051"),
    ("reviews:50051", f"{FQDN}:50051"),
    ("reviews:8080", f"{FQDN}:8080"),
    (f"{FQDN}:8080", f"{FQDN}:8080"),
])
def test_api_listener_hcm_points_at_the_ports_route_config(name, rds):
    listener = api_listeners(mesh(TWO_PORTS))[name]
    assert listener.name == name
    assert not listener.HasField("address")  # an api_listener, not a socket
    hcm = hcm_of(listener)
    assert hcm.rds.route_config_name == rds
    source = hcm.rds.config_source
    assert source.HasField("ads")
    assert source.resource_api_version == config_source_pb2.V3
    assert not hcm.HasField("route_config")


def test_api_listener_http_filters_are_fault_then_router_with_typed_configs():
    for listener in api_listeners(mesh(TWO_PORTS)).values():
        fault, router = hcm_of(listener).http_filters
        assert (fault.name, router.name) == ("envoy.filters.http.fault",
                                             "envoy.filters.http.router")
        assert fault.typed_config.type_url == FAULT_URL
        assert router.typed_config.type_url == ROUTER_URL
        assert fault.typed_config.Unpack(config := fault_pb2.HTTPFault())
        assert config == fault_pb2.HTTPFault()  # empty: routes switch it on (gRFC A33)
        assert router.typed_config.Unpack(router_pb2.Router())


# ---------------------------------------------------------------- xDS server listeners


GRPC_8080 = (EndpointPort(name="grpc", port=8080),)


def _slice(*endpoints, ports=GRPC_8080, name=None):
    return endpoint_slice(service("reviews"), *endpoints, ports=ports, name=name)


@pytest.mark.parametrize(("objects", "expected"), [
    pytest.param((service("reviews"),), set(), id="no-slices"),
    pytest.param((service("reviews"), _slice(endpoint("10.0.0.1"))),
                 {"10.0.0.1:8080", "0.0.0.0:8080", "[::]:8080"}, id="ipv4"),
    pytest.param((service("reviews"), _slice(endpoint("fd00::1"))),
                 {"[fd00::1]:8080", "0.0.0.0:8080", "[::]:8080"}, id="ipv6-bracketed"),
    pytest.param((service("reviews"), _slice(endpoint("10.0.0.1", "fd00::1"))),
                 {"10.0.0.1:8080", "[fd00::1]:8080", "0.0.0.0:8080", "[::]:8080"},
                 id="every-address-of-an-endpoint"),
    pytest.param((service("reviews"), _slice(endpoint("10.0.0.1"), endpoint("10.0.0.2"))),
                 {"10.0.0.1:8080", "10.0.0.2:8080", "0.0.0.0:8080", "[::]:8080"},
                 id="every-endpoint"),
    pytest.param((service("reviews"), _slice(endpoint("10.0.0.1", ready=False, serving=False))),
                 {"10.0.0.1:8080", "0.0.0.0:8080", "[::]:8080"}, id="not-ready-too"),
    pytest.param((service("reviews"),
                  _slice(endpoint("10.0.0.1"), ports=(EndpointPort(name="grpc", port=8080),
                                                      EndpointPort(name="admin", port=9090)))),
                 {"10.0.0.1:8080", "10.0.0.1:9090", "0.0.0.0:8080", "0.0.0.0:9090",
                  "[::]:8080", "[::]:9090"}, id="every-slice-port"),
    pytest.param((service("reviews"), _slice(endpoint("10.0.0.1"), name="a"),
                  _slice(endpoint("10.0.0.1"), name="b")),
                 {"10.0.0.1:8080", "0.0.0.0:8080", "[::]:8080"}, id="same-address-twice"),
    pytest.param((service("reviews"),
                  EndpointSlice(name="x", namespace="default", service_name="reviews",
                                endpoints=(endpoint("10.0.0.1"),))),
                 set(), id="slice-without-ports"),
    pytest.param((_slice(endpoint("10.0.0.1")),), set(), id="slice-of-an-unknown-service"),
])
def test_server_listener_names(objects, expected):
    assert set(server_listeners(mesh(*objects))) == expected


@pytest.mark.parametrize(("address", "port", "name"), [
    ("10.0.0.1", 8080, SERVER + "10.0.0.1:8080"),
    ("0.0.0.0", 50051, SERVER + "0.0.0.0:50051"),
    ("::", 50051, SERVER + "[::]:50051"),
    ("fd00::1", 8080, SERVER + "[fd00::1]:8080"),
])
def test_server_listener_name(address, port, name):
    assert server_listener_name(address, port) == name


@pytest.mark.parametrize(("key", "address", "port"), [
    ("10.0.0.1:8080", "10.0.0.1", 8080),
    ("[fd00::1]:8080", "fd00::1", 8080),
    ("0.0.0.0:8080", "0.0.0.0", 8080),
    ("[::]:8080", "::", 8080),
])
def test_server_listener_is_a_socket_at_its_address_served_locally(key, address, port):
    model = mesh(service("reviews"), _slice(endpoint("10.0.0.1", "fd00::1")))
    listener = server_listeners(model)[key]
    assert listener.name == SERVER + key
    assert listener.address.socket_address.address == address  # never bracketed
    assert listener.address.socket_address.port_value == port
    assert listener.traffic_direction == base_pb2.INBOUND
    assert not listener.HasField("api_listener")
    (chain,) = listener.filter_chains
    assert [f.name for f in chain.filters] == ["envoy.filters.network.http_connection_manager"]
    hcm = hcm_of(listener)
    assert not hcm.HasField("rds")
    assert [(f.name, f.typed_config.type_url) for f in hcm.http_filters] == [
        ("envoy.filters.http.router", ROUTER_URL)]
    (vhost,) = hcm.route_config.virtual_hosts
    assert list(vhost.domains) == ["*"]
    (route,) = vhost.routes
    assert route.match.prefix == ""
    assert route.WhichOneof("action") == "non_forwarding_action"


def test_server_listeners_are_sorted_by_port_then_address():
    svc = service("reviews")
    model = mesh(svc, _slice(endpoint("10.0.0.2"), endpoint("10.0.0.1"),
                             ports=(EndpointPort(name="grpc", port=9090),
                                    EndpointPort(name="x", port=8080))))
    assert list(server_listeners(model)) == [
        "0.0.0.0:8080", "10.0.0.1:8080", "10.0.0.2:8080", "[::]:8080",
        "0.0.0.0:9090", "10.0.0.1:9090", "10.0.0.2:9090", "[::]:9090",
    ]
