"""xDS resources produced by the REAL translator for small models, shared by tests."""

from __future__ import annotations

from google.protobuf import any_pb2, message

from tests.xds_server.translate.model_builders import (
    backend,
    endpoint,
    endpoint_slice,
    grpc_route,
    header,
    match,
    mesh,
    policy,
    rule,
    service,
)
from xds_server.model import (
    CircuitBreaker,
    FaultInjection,
    LoadBalancer,
    MeshModel,
    OutlierDetection,
    RetryPolicy,
)
from xds_server.node import NodeGroup

MESHLIB = NodeGroup(kind="meshlib")
FQDN = "reviews.default.svc.cluster.local"
RDS = f"{FQDN}:50051"
OWN = f"outbound|50051||{FQDN}"
V1 = "outbound|50051||reviews-v1.default.svc.cluster.local"
V2 = "outbound|50051||reviews-v2.default.svc.cluster.local"


def canary_model() -> MeshModel:
    """reviews → 90/10 canary (header ``x-canary: 1`` → v2 only), every policy knob set."""
    reviews, v1, v2 = service("reviews"), service("reviews-v1"), service("reviews-v2")
    return mesh(
        reviews, v1, v2,
        endpoint_slice(reviews, endpoint("10.0.0.9", zone="c")),
        endpoint_slice(v1, endpoint("10.0.0.1", zone="a"), endpoint("10.0.0.2", zone="b"),
                       endpoint("10.0.0.4", zone="b", ready=False)),
        endpoint_slice(v2, endpoint("10.0.0.3", zone="a")),
        grpc_route("reviews",
                   rule(backend("reviews-v2"), matches=(match(None, header("x-canary", "1")),)),
                   rule(backend("reviews-v1", 90), backend("reviews-v2", 10), timeout=2.5)),
        policy("reviews",
               load_balancer=LoadBalancer(type="RING_HASH", hash_header="x-user",
                                          minimum_ring_size=2048, maximum_ring_size=4096),
               retries=RetryPolicy(attempts=4, per_try_timeout=0.2,
                                   retry_on=("UNAVAILABLE", "RESOURCE_EXHAUSTED"),
                                   base_interval=0.05, max_interval=0.5),
               circuit_breaker=CircuitBreaker(max_concurrent_requests=77),
               outlier_detection=OutlierDetection(consecutive_failures=3, interval=2.0,
                                                  base_ejection_time=5.0,
                                                  max_ejection_percent=40),
               fault_injection=FaultInjection(delay_percent=10, delay=0.1,
                                              abort_percent=5.5)),
        policy("reviews-v1", lb="LEAST_REQUEST"),
    )


def pack(msg: message.Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out
