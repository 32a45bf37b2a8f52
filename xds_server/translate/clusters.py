"""Clusters: one EDS Cluster per Service port, shaped by the Service's TrafficPolicy and,
for nodes that do mTLS, its mTLS mode (an ``UpstreamTlsContext``, see ``security``).

The same Cluster serves proxyless gRPC and Envoy: each reads the fields it knows and
ignores the rest (gRPC ignores ``typed_extension_protocol_options``; Envoy needs it to
speak HTTP/2 upstream).
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, protocol_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from google.protobuf import message, wrappers_pb2

from meshlib.contract.cluster_metadata import (  # breaker + budget; gRPC, Envoy ignore it
    MESHLIB_METADATA,
    CircuitBreakerConfig,
    ClusterMetadata,
    RetryBudgetConfig,
    encode,
)
from xds_server.model import (
    CircuitBreaker,
    LoadBalancer,
    MeshModel,
    OutlierDetection,
    Service,
    ServicePort,
    TrafficPolicy,
)
from xds_server.translate._protos import ads_config_source, duration, pack
from xds_server.translate.names import cluster_name
from xds_server.translate.security import (
    effective_mtls_mode,
    service_identities,
    upstream_tls_socket,
)

__all__ = [
    "CONNECT_TIMEOUT",
    "HTTP_PROTOCOL_OPTIONS",
    "MESHLIB_METADATA",
    "build_cluster",
    "clusters",
]

CONNECT_TIMEOUT = 5.0
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_HTTP2_PROTOCOLS = ("grpc", "http2")
_Cluster = cluster_pb2.Cluster


def clusters(model: MeshModel, services: Iterable[Service] | None = None, *,
             tls: bool = False) -> dict[str, cluster_pb2.Cluster]:
    """Every Service port's Cluster (of ``services`` only, when given), by name.

    ``tls``: the nodes can do mTLS (``NodeGroup.tls``), so Clusters of Services taking
    mTLS get an ``UpstreamTlsContext``; never for other nodes, whose bootstrap has no
    certificate provider to name (gRPC would NACK the Cluster).
    """
    out: dict[str, cluster_pb2.Cluster] = {}
    for service in model.services if services is None else services:
        socket = _transport_socket(model, service) if tls else None
        for port in service.distinct_ports:
            cluster = build_cluster(model, service, port)
            if socket is not None:
                cluster.transport_socket.CopyFrom(socket)
            out[cluster.name] = cluster
    return out


def _transport_socket(model: MeshModel, service: Service) -> base_pb2.TransportSocket | None:
    """mTLS to ``service`` (STRICT or PERMISSIVE), checking it is who it should be."""
    if effective_mtls_mode(model, service) == "DISABLE":
        return None
    return upstream_tls_socket(service_identities(model, service))


def build_cluster(model: MeshModel, service: Service, port: ServicePort) -> cluster_pb2.Cluster:
    """The Cluster of ``service:port``, without TLS; its EDS ``service_name`` is its name."""
    name = cluster_name(service, port.port, cluster_domain=model.mesh_config.cluster_domain)
    cluster = _Cluster(
        name=name,
        type=_Cluster.EDS,
        eds_cluster_config=_Cluster.EdsClusterConfig(eds_config=ads_config_source(),
                                                     service_name=name),
        connect_timeout=duration(CONNECT_TIMEOUT),
    )
    if port.protocol in _HTTP2_PROTOCOLS:
        options = hpo_pb2.HttpProtocolOptions()
        options.explicit_http_config.http2_protocol_options.CopyFrom(
            protocol_pb2.Http2ProtocolOptions())
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(options))
    policy = model.traffic_policy_for(service)
    if policy is None:
        return cluster
    if policy.load_balancer is not None:
        _set_lb_policy(cluster, policy.load_balancer)
    if policy.circuit_breaker is not None:
        cluster.circuit_breakers.CopyFrom(_circuit_breakers(policy.circuit_breaker))
    if policy.outlier_detection is not None:
        cluster.outlier_detection.CopyFrom(_outlier_detection(policy.outlier_detection))
    extra = encode(_meshlib_metadata(policy))
    if extra:
        cluster.metadata.filter_metadata[MESHLIB_METADATA].update(extra)
    return cluster


def _meshlib_metadata(policy: TrafficPolicy) -> ClusterMetadata:
    """The breaker and retry-budget settings meshlib reads (see ``MESHLIB_METADATA``)."""
    cb = policy.circuit_breaker
    breaker = None if cb is None else CircuitBreakerConfig(
        consecutive_failures=cb.consecutive_failures, open_duration=cb.open_duration,
        half_open_probes=cb.half_open_probes)
    budget = None if policy.retries is None else RetryBudgetConfig(
        percent=policy.retries.budget.percent,
        min_retries_per_second=policy.retries.budget.min_retries_per_second)
    return ClusterMetadata(circuit_breaker=breaker, retry_budget=budget)


def _set_lb_policy(cluster: cluster_pb2.Cluster, lb: LoadBalancer) -> None:
    if lb.type == "LEAST_REQUEST":
        cluster.lb_policy = _Cluster.LEAST_REQUEST
        cluster.least_request_lb_config.choice_count.value = lb.choice_count
        # grpcio NACKs lb_policy LEAST_REQUEST ("LB policy is not supported"). With
        # load_balancing_policy set, both ignore lb_policy and take the first policy
        # they implement: least request for Envoy, round robin for gRPC (gRFC A52,
        # https://github.com/grpc/proposal/blob/master/A52-xds-custom-lb-policies.md).
        least = least_request_pb2.LeastRequest()
        least.choice_count.value = lb.choice_count
        cluster.load_balancing_policy.policies.extend([
            _policy("envoy.load_balancing_policies.least_request", least),
            _policy("envoy.load_balancing_policies.round_robin", round_robin_pb2.RoundRobin()),
        ])
    elif lb.type == "RING_HASH":
        # gRFC A42: gRPC NACKs ring sizes above 8M or min > max.
        cluster.lb_policy = _Cluster.RING_HASH
        cluster.ring_hash_lb_config.minimum_ring_size.value = lb.minimum_ring_size
        cluster.ring_hash_lb_config.maximum_ring_size.value = lb.maximum_ring_size
    else:
        cluster.lb_policy = _Cluster.ROUND_ROBIN


def _policy(name: str, config: message.Message) -> cluster_pb2.LoadBalancingPolicy.Policy:
    policy = cluster_pb2.LoadBalancingPolicy.Policy()
    policy.typed_extension_config.name = name
    policy.typed_extension_config.typed_config.CopyFrom(pack(config))
    return policy


def _circuit_breakers(cb: CircuitBreaker) -> circuit_breaker_pb2.CircuitBreakers:
    """gRFC A32: gRPC reads ``max_requests`` of the DEFAULT-priority threshold only."""
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[
        circuit_breaker_pb2.CircuitBreakers.Thresholds(
            priority=base_pb2.DEFAULT,
            max_requests=wrappers_pb2.UInt32Value(value=cb.max_concurrent_requests),
        )
    ])


def _outlier_detection(od: OutlierDetection) -> outlier_detection_pb2.OutlierDetection:
    """Outlier detection for Envoy and gRPC (gRFC A50).

    https://github.com/grpc/proposal/blob/master/A50-xds-outlier-detection.md — gRPC
    runs only the success-rate and failure-percentage algorithms; Envoy also runs
    consecutive 5xx. Success rate is on by default in both (``enforcing_success_rate``
    defaults to 100), and the model has no knob for it, so it is switched off
    explicitly; failure percentage is on only when its threshold is set.
    """
    u32 = wrappers_pb2.UInt32Value
    out = outlier_detection_pb2.OutlierDetection(
        consecutive_5xx=u32(value=od.consecutive_failures),
        enforcing_consecutive_5xx=u32(value=100),
        enforcing_success_rate=u32(value=0),
        interval=duration(od.interval),
        base_ejection_time=duration(od.base_ejection_time),
        max_ejection_time=duration(od.max_ejection_time),
        max_ejection_percent=u32(value=od.max_ejection_percent),
    )
    if od.failure_percentage_threshold is not None:
        out.failure_percentage_threshold.value = od.failure_percentage_threshold
        out.failure_percentage_minimum_hosts.value = od.failure_percentage_minimum_hosts
        out.failure_percentage_request_volume.value = od.failure_percentage_request_volume
        out.enforcing_failure_percentage.value = 100
    return out
