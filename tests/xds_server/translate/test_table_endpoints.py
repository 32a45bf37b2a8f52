"""Table tests of ClusterLoadAssignment translation: EndpointSlices → EDS per Service port.

Tests named ``test_bug_*`` fail on purpose: each pins a translation bug (see its
docstring) and passes once the bug is fixed.
"""

from __future__ import annotations

import ipaddress

import pytest
from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import wrappers_pb2

from tests.xds_server.translate.model_builders import endpoint, endpoint_slice, mesh, port, service
from xds_server.model import Endpoint, EndpointPort, EndpointSlice, Service
from xds_server.node import NodeGroup
from xds_server.resources import ENDPOINT
from xds_server.translate import build_resources
from xds_server.translate.endpoints import health_status

Health = health_check_pb2.HealthStatus
FQDN = "reviews.default.svc.cluster.local"
OWN = f"outbound|50051||{FQDN}"
GRPC_8080 = (EndpointPort(name="grpc", port=8080),)


def assignments(*objects) -> dict[str, endpoint_pb2.ClusterLoadAssignment]:
    return build_resources(mesh(*objects), NodeGroup(kind="grpc"))[ENDPOINT]


def own_assignment(*endpoints: Endpoint, reviews: Service | None = None,
                   ports=GRPC_8080) -> endpoint_pb2.ClusterLoadAssignment:
    reviews = reviews or service("reviews")
    return assignments(reviews, endpoint_slice(reviews, *endpoints, ports=ports))[OWN]


def flat(cla: endpoint_pb2.ClusterLoadAssignment) -> list[tuple[str, str, int, int]]:
    """(zone, address, port, health) of every endpoint, in output order."""
    return [(loc.locality.zone, e.endpoint.address.socket_address.address,
             e.endpoint.address.socket_address.port_value, e.health_status)
            for loc in cla.endpoints for e in loc.lb_endpoints]


# --------------------------------------------------------------------------- port linking

HTTP = port(8080, "http", "http")
UNNAMED = port(80, "", "http")


@pytest.mark.parametrize(("ports", "slice_ports", "expected"), [
    pytest.param((port(50051),), (EndpointPort(name="grpc", port=8080),), {50051: 8080},
                 id="by-name"),
    pytest.param((UNNAMED,), (EndpointPort(name="", port=8080),), {80: 8080},
                 id="unnamed-to-unnamed"),
    pytest.param((port(50051),), (EndpointPort(name="", port=8080),), {50051: None},
                 id="named-vs-unnamed"),
    pytest.param((UNNAMED,), (EndpointPort(name="http", port=8080),), {80: None},
                 id="unnamed-vs-named"),
    pytest.param((port(50051), HTTP),
                 (EndpointPort(name="http", port=8081), EndpointPort(name="grpc", port=9090)),
                 {50051: 9090, 8080: 8081}, id="two-ports"),
    pytest.param((port(50051), HTTP), (EndpointPort(name="http", port=50051),),
                 {50051: None, 8080: 50051}, id="name-not-number"),
    pytest.param((port(50051),), (EndpointPort(name="other", port=8080),), {50051: None},
                 id="no-match"),
    pytest.param((port(50051),), (), {50051: None}, id="slice-without-ports"),
])
def test_port_linking(ports, slice_ports, expected):
    reviews = Service(name="reviews", namespace="default", ports=ports)
    slice_ = EndpointSlice(name="s", namespace="default", service_name="reviews",
                           ports=slice_ports, endpoints=(endpoint("10.0.0.1"),))
    out = assignments(reviews, slice_)
    assert set(out) == {f"outbound|{n}||{FQDN}" for n in expected}
    for number, dialled in expected.items():
        cla = out[f"outbound|{number}||{FQDN}"]
        assert cla.cluster_name == f"outbound|{number}||{FQDN}"
        if dialled is None:
            assert list(cla.endpoints) == []
        else:
            assert flat(cla) == [("", "10.0.0.1", dialled, Health.HEALTHY)]


def test_lb_endpoint_shape():
    cla = own_assignment(endpoint("10.0.0.1", zone="z"))
    assert cla == endpoint_pb2.ClusterLoadAssignment(
        cluster_name=OWN,
        endpoints=[ec_pb2.LocalityLbEndpoints(
            locality=base_pb2.Locality(zone="z"),
            load_balancing_weight=wrappers_pb2.UInt32Value(value=1),
            lb_endpoints=[ec_pb2.LbEndpoint(
                health_status=Health.HEALTHY,
                endpoint=ec_pb2.Endpoint(address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address="10.0.0.1",
                                                             port_value=8080))),
            )],
        )],
    )


# ------------------------------------------------------------------------- localities


@pytest.mark.parametrize(("endpoints", "expected"), [
    pytest.param((endpoint("10.0.0.1"),), [("", 1, ["10.0.0.1"])], id="no-zone"),
    pytest.param((endpoint("10.0.0.1", zone="a"), endpoint("10.0.0.2", zone="a")),
                 [("a", 2, ["10.0.0.1", "10.0.0.2"])], id="one-zone"),
    pytest.param((endpoint("10.0.0.1", zone="b"), endpoint("10.0.0.2", zone="a"),
                  endpoint("10.0.0.3", zone="b")),
                 [("a", 1, ["10.0.0.2"]), ("b", 2, ["10.0.0.1", "10.0.0.3"])],
                 id="zones-sorted"),
    pytest.param((endpoint("10.0.0.1", zone="a"), endpoint("10.0.0.2")),
                 [("", 1, ["10.0.0.2"]), ("a", 1, ["10.0.0.1"])], id="no-zone-is-a-zone"),
    pytest.param((endpoint("10.0.0.1", "fd00::1", zone="a"),),
                 [("a", 2, ["10.0.0.1", "fd00::1"])], id="every-address-counts"),
    pytest.param((endpoint("10.0.0.1", zone="a"),
                  endpoint("10.0.0.2", zone="a", ready=False, serving=False)),
                 [("a", 2, ["10.0.0.1", "10.0.0.2"])], id="unhealthy-endpoints-count"),
])
def test_one_locality_per_zone_weighted_by_endpoint_count(endpoints, expected):
    cla = own_assignment(*endpoints)
    got = [(loc.locality.zone, loc.load_balancing_weight.value,
            [e.endpoint.address.socket_address.address for e in loc.lb_endpoints])
           for loc in cla.endpoints]
    assert got == expected


# ------------------------------------------------------------------------------ health


@pytest.mark.parametrize(("ready", "serving", "terminating", "status"), [
    (True, True, False, Health.HEALTHY),
    (True, True, True, Health.HEALTHY),
    (True, False, False, Health.HEALTHY),
    (False, True, True, Health.DRAINING),
    (False, True, False, Health.UNHEALTHY),
    (False, False, True, Health.UNHEALTHY),
    (False, False, False, Health.UNHEALTHY),
])
def test_health_status(ready, serving, terminating, status):
    ep = endpoint("10.0.0.1", "fd00::1", ready=ready, serving=serving, terminating=terminating)
    assert health_status(ep) == status
    assert [h for *_, h in flat(own_assignment(ep))] == [status, status]


# ------------------------------------------------------------------- empty and duplicate


@pytest.mark.parametrize("objects", [
    pytest.param((), id="no-slices"),
    pytest.param((endpoint_slice(service("reviews"), ports=GRPC_8080),), id="slice-no-endpoints"),
    pytest.param((endpoint_slice(service("reviews-v1"), endpoint("10.0.0.1"), ports=GRPC_8080),),
                 id="other-services-slice"),
    pytest.param((EndpointSlice(name="s", namespace="shop", service_name="reviews",
                                ports=GRPC_8080, endpoints=(endpoint("10.0.0.1"),)),),
                 id="same-name-other-namespace"),
])
def test_empty_assignment_exists(objects):
    out = assignments(service("reviews"), *objects)
    assert out[OWN] == endpoint_pb2.ClusterLoadAssignment(cluster_name=OWN)


IP1 = endpoint("10.0.0.1")


@pytest.mark.parametrize(("slices", "expected"), [
    pytest.param([((IP1, IP1), 8080)], [("", "10.0.0.1", 8080, Health.HEALTHY)],
                 id="twice-in-a-slice"),
    pytest.param([((endpoint("10.0.0.1", "10.0.0.1"),), 8080)],
                 [("", "10.0.0.1", 8080, Health.HEALTHY)], id="twice-in-an-endpoint"),
    pytest.param([((IP1,), 8080), ((IP1,), 8080)], [("", "10.0.0.1", 8080, Health.HEALTHY)],
                 id="in-two-slices"),
    # The first occurrence (slice order, then endpoint order) wins, health and zone too.
    pytest.param([((endpoint("10.0.0.1", ready=False, serving=False, zone="a"),), 8080),
                  ((endpoint("10.0.0.1", zone="b"),), 8080)],
                 [("a", "10.0.0.1", 8080, Health.UNHEALTHY)], id="first-occurrence-wins"),
    pytest.param([((endpoint("10.0.0.1", zone="a"), endpoint("10.0.0.1", zone="b")), 8080)],
                 [("a", "10.0.0.1", 8080, Health.HEALTHY)], id="first-zone-wins"),
    pytest.param([((IP1,), 8080), ((IP1,), 9090)],
                 [("", "10.0.0.1", 8080, Health.HEALTHY), ("", "10.0.0.1", 9090, Health.HEALTHY)],
                 id="same-address-other-port-kept"),
])
def test_duplicate_address_port_is_sent_once(slices, expected):
    reviews = service("reviews")
    cla = assignments(reviews, *(
        endpoint_slice(reviews, *endpoints, ports=(EndpointPort(name="grpc", port=number),),
                       name=f"s{i}")
        for i, (endpoints, number) in enumerate(slices)
    ))[OWN]
    assert flat(cla) == expected
    for locality in cla.endpoints:
        assert locality.load_balancing_weight.value == len(locality.lb_endpoints)


def test_assignment_per_port_of_every_service():
    reviews = service("reviews", port(50051), HTTP)
    ratings = service("ratings", port(9090), namespace="shop")
    out = assignments(
        reviews, ratings,
        endpoint_slice(reviews, endpoint("10.0.0.1"),
                       ports=(EndpointPort(name="grpc", port=8080),
                              EndpointPort(name="http", port=8081))),
        endpoint_slice(ratings, endpoint("10.0.1.1"), port=7070),
    )
    assert {name: [(a, p) for _, a, p, _ in flat(cla)] for name, cla in out.items()} == {
        OWN: [("10.0.0.1", 8080)],
        f"outbound|8080||{FQDN}": [("10.0.0.1", 8081)],
        "outbound|9090||ratings.shop.svc.cluster.local": [("10.0.1.1", 7070)],
    }


def test_bug_fqdn_endpoint_slices_are_not_sent_as_eds_addresses():
    """BUG: an ``addressType: FQDN`` EndpointSlice (accepted by the sources) puts host
    names into EDS ``socket_address.address``. EDS addresses must be IPs: Envoy rejects
    the update ("malformed IP address ... Consider setting resolver_name or setting
    cluster type to 'STRICT_DNS'") and gRPC NACKs the resource, so one FQDN slice breaks
    the whole Service. Fix: skip slices whose ``address_type`` is ``FQDN`` in
    endpoints.build_load_assignment (and grpc_server_listeners), as Istio does."""
    reviews = service("reviews")
    cla = assignments(
        reviews,
        endpoint_slice(reviews, endpoint("10.0.0.1"), ports=GRPC_8080, name="ip"),
        endpoint_slice(reviews, endpoint("api.example.com"), ports=GRPC_8080, name="dns",
                       address_type="FQDN"),
    )[OWN]
    assert [address for _, address, _, _ in flat(cla) if not is_ip(address)] == []
    assert flat(cla) == [("", "10.0.0.1", 8080, Health.HEALTHY)]


def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True
