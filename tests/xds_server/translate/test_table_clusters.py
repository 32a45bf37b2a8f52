"""Table tests of Cluster translation: one EDS Cluster per Service port, shaped by policy."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, protocol_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from tests.xds_server.translate.model_builders import mesh, policy, port, service
from xds_server.model import (
    CircuitBreaker,
    LoadBalancer,
    MeshConfig,
    OutlierDetection,
    Service,
)
from xds_server.node import NodeGroup
from xds_server.resources import CLUSTER
from xds_server.translate import build_resources
from xds_server.translate.clusters import CONNECT_TIMEOUT, HTTP_PROTOCOL_OPTIONS

Cluster = cluster_pb2.Cluster
U32 = wrappers_pb2.UInt32Value
FQDN = "reviews.default.svc.cluster.local"
OWN = f"outbound|50051||{FQDN}"


def secs(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def clusters_of(*objects, mesh_config=None):
    model = mesh(*objects, mesh_config=mesh_config)
    return build_resources(model, NodeGroup(kind="grpc"))[CLUSTER]


def own_cluster(*extra) -> cluster_pb2.Cluster:
    return clusters_of(service("reviews"), *extra)[OWN]


# ------------------------------------------------------------------------ names and EDS


@pytest.mark.parametrize(("objects", "domain", "expected"), [
    pytest.param((service("reviews"),), None, {OWN}, id="one-port"),
    pytest.param((service("reviews", port(50051), port(8080, "http", "http")),), None,
                 {OWN, f"outbound|8080||{FQDN}"}, id="every-port"),
    pytest.param((service("reviews"), service("ratings", port(9090), namespace="shop")), None,
                 {OWN, "outbound|9090||ratings.shop.svc.cluster.local"}, id="every-service"),
    pytest.param((service("reviews"),), "corp.example",
                 {"outbound|50051||reviews.default.svc.corp.example"}, id="cluster-domain"),
    pytest.param((Service(name="headless", namespace="default", ports=()),), None, set(),
                 id="service-without-ports"),
])
def test_cluster_names(objects, domain, expected):
    config = MeshConfig(cluster_domain=domain) if domain else None
    assert set(clusters_of(*objects, mesh_config=config)) == expected


@pytest.mark.parametrize("protocol", ["grpc", "http2", "http", "tcp"])
def test_eds_cluster_over_ads(protocol):
    cluster = clusters_of(service("reviews", port(50051, protocol, protocol)))[OWN]
    assert cluster.name == OWN
    assert cluster.type == Cluster.EDS
    assert cluster.eds_cluster_config == Cluster.EdsClusterConfig(
        eds_config=config_source_pb2.ConfigSource(
            ads=config_source_pb2.AggregatedConfigSource(),
            resource_api_version=config_source_pb2.V3),
        service_name=OWN,  # the EDS resource is named like the cluster
    )
    assert cluster.connect_timeout == secs(CONNECT_TIMEOUT) == secs(5)


@pytest.mark.parametrize(("protocol", "http2"), [
    ("grpc", True), ("http2", True), ("http", False), ("tcp", False),
])
def test_http2_protocol_options_only_for_grpc_and_http2(protocol, http2):
    cluster = clusters_of(service("reviews", port(50051, protocol, protocol)))[OWN]
    options = cluster.typed_extension_protocol_options
    if not http2:
        assert not options
        return
    assert list(options) == [HTTP_PROTOCOL_OPTIONS]
    unpacked = hpo_pb2.HttpProtocolOptions()
    assert options[HTTP_PROTOCOL_OPTIONS].Unpack(unpacked)
    expected = hpo_pb2.HttpProtocolOptions()
    expected.explicit_http_config.http2_protocol_options.CopyFrom(
        protocol_pb2.Http2ProtocolOptions())
    assert unpacked == expected


def test_http2_options_are_per_port():
    reviews = service("reviews", port(50051), port(8080, "http", "http"))
    out = clusters_of(reviews)
    assert out[OWN].typed_extension_protocol_options
    assert not out[f"outbound|8080||{FQDN}"].typed_extension_protocol_options


# ----------------------------------------------------------------------- load balancing


def least_request_policies(choice_count: int) -> cluster_pb2.LoadBalancingPolicy:
    least = least_request_pb2.LeastRequest()
    least.choice_count.value = choice_count
    out = cluster_pb2.LoadBalancingPolicy()
    for name, config in (("envoy.load_balancing_policies.least_request", least),
                         ("envoy.load_balancing_policies.round_robin",
                          round_robin_pb2.RoundRobin())):
        entry = out.policies.add()
        entry.typed_extension_config.name = name
        entry.typed_extension_config.typed_config.Pack(config)
    return out


@pytest.mark.parametrize(("lb", "lb_policy", "config_field", "config"), [
    pytest.param(None, Cluster.ROUND_ROBIN, None, None, id="no-policy"),
    pytest.param(LoadBalancer(), Cluster.ROUND_ROBIN, None, None, id="default"),
    pytest.param(LoadBalancer(type="ROUND_ROBIN"), Cluster.ROUND_ROBIN, None, None,
                 id="round-robin"),
    pytest.param(LoadBalancer(type="LEAST_REQUEST"), Cluster.LEAST_REQUEST,
                 "least_request_lb_config",
                 Cluster.LeastRequestLbConfig(choice_count=U32(value=2)), id="least-request"),
    pytest.param(LoadBalancer(type="LEAST_REQUEST", choice_count=5), Cluster.LEAST_REQUEST,
                 "least_request_lb_config",
                 Cluster.LeastRequestLbConfig(choice_count=U32(value=5)),
                 id="least-request-choices"),
    pytest.param(LoadBalancer(type="RING_HASH", hash_header="x"), Cluster.RING_HASH,
                 "ring_hash_lb_config",
                 Cluster.RingHashLbConfig(minimum_ring_size=wrappers_pb2.UInt64Value(value=1024),
                                          maximum_ring_size=wrappers_pb2.UInt64Value(
                                              value=8_388_608)),
                 id="ring-hash-defaults"),
    pytest.param(LoadBalancer(type="RING_HASH", minimum_ring_size=64, maximum_ring_size=4096),
                 Cluster.RING_HASH, "ring_hash_lb_config",
                 Cluster.RingHashLbConfig(minimum_ring_size=wrappers_pb2.UInt64Value(value=64),
                                          maximum_ring_size=wrappers_pb2.UInt64Value(value=4096)),
                 id="ring-hash-sizes"),
])
def test_lb_policy(lb, lb_policy, config_field, config):
    extra = (policy("reviews", load_balancer=lb),) if lb is not None else ()
    cluster = own_cluster(*extra)
    assert cluster.lb_policy == lb_policy
    assert cluster.WhichOneof("lb_config") == config_field
    if config_field is not None:
        assert getattr(cluster, config_field) == config
    if lb is not None and lb.type == "LEAST_REQUEST":
        # gRPC NACKs lb_policy LEAST_REQUEST alone; it takes the round_robin fallback.
        assert cluster.load_balancing_policy == least_request_policies(lb.choice_count)
    else:
        assert not cluster.HasField("load_balancing_policy")


def test_entryapplies_to_every_port_of_its_target_only():
    reviews = service("reviews", port(50051), port(8080, "http", "http"))
    ratings = service("ratings", port(9090))
    out = clusters_of(reviews, ratings, policy("reviews", lb="RING_HASH"),
                      policy("ratings", namespace="shop", lb="LEAST_REQUEST"))
    assert out[OWN].lb_policy == Cluster.RING_HASH
    assert out[f"outbound|8080||{FQDN}"].lb_policy == Cluster.RING_HASH
    # the LEAST_REQUEST policy targets shop/ratings, not default/ratings
    assert out["outbound|9090||ratings.default.svc.cluster.local"].lb_policy == (
        Cluster.ROUND_ROBIN)


# ------------------------------------------------------------------- circuit breakers


@pytest.mark.parametrize(("breaker", "max_requests"), [
    (CircuitBreaker(), 1024),
    (CircuitBreaker(max_concurrent_requests=7), 7),
    (CircuitBreaker(max_concurrent_requests=1, consecutive_failures=1, open_duration=1), 1),
])
def test_circuit_breakers_max_requests(breaker, max_requests):
    cluster = own_cluster(policy("reviews", circuit_breaker=breaker))
    assert cluster.circuit_breakers == circuit_breaker_pb2.CircuitBreakers(thresholds=[
        circuit_breaker_pb2.CircuitBreakers.Thresholds(priority=base_pb2.DEFAULT,
                                                       max_requests=U32(value=max_requests)),
    ])


def test_no_circuit_breakers_or_outlier_detection_without_policy():
    cluster = own_cluster(policy("reviews", timeout=1.0))
    assert not cluster.HasField("circuit_breakers")
    assert not cluster.HasField("outlier_detection")


# ----------------------------------------------------------------- outlier detection


def outlier(consecutive=5, interval=10.0, base=30.0, maximum=300.0, max_percent=10,
            failure_percentage=None) -> outlier_detection_pb2.OutlierDetection:
    out = outlier_detection_pb2.OutlierDetection(
        consecutive_5xx=U32(value=consecutive),
        enforcing_consecutive_5xx=U32(value=100),
        enforcing_success_rate=U32(value=0),  # on by default in gRPC and Envoy: switched off
        interval=secs(interval),
        base_ejection_time=secs(base),
        max_ejection_time=secs(maximum),
        max_ejection_percent=U32(value=max_percent),
    )
    if failure_percentage is not None:
        threshold, hosts, volume = failure_percentage
        out.failure_percentage_threshold.value = threshold
        out.failure_percentage_minimum_hosts.value = hosts
        out.failure_percentage_request_volume.value = volume
        out.enforcing_failure_percentage.value = 100
    return out


@pytest.mark.parametrize(("detection", "expected"), [
    pytest.param(OutlierDetection(), outlier(), id="defaults"),
    pytest.param(OutlierDetection(consecutive_failures=3, interval=1.5, base_ejection_time=2,
                                  max_ejection_time=20, max_ejection_percent=50),
                 outlier(3, 1.5, 2, 20, 50), id="consecutive"),
    pytest.param(OutlierDetection(failure_percentage_threshold=40),
                 outlier(failure_percentage=(40, 5, 50)), id="failure-percentage-defaults"),
    pytest.param(OutlierDetection(failure_percentage_threshold=0,
                                  failure_percentage_minimum_hosts=2,
                                  failure_percentage_request_volume=10),
                 outlier(failure_percentage=(0, 2, 10)), id="failure-percentage-zero-is-set"),
    pytest.param(OutlierDetection(failure_percentage_minimum_hosts=2,
                                  failure_percentage_request_volume=10),
                 outlier(), id="failure-percentage-knobs-without-threshold"),
])
def test_outlier_detection(detection, expected):
    cluster = own_cluster(policy("reviews", outlier_detection=detection))
    assert cluster.outlier_detection == expected
