"""Cluster (CDS): EDS service name, load-balancing policy, limits, outlier detection.

* Only EDS clusters fetched over ADS (or ``self``) are supported.
* The LB policy comes from ``load_balancing_policy`` when set — the first policy
  meshlib implements wins (gRFC A52) — else from ``lb_policy``: ROUND_ROBIN,
  LEAST_REQUEST (``choice_count`` >= 2) or RING_HASH (XX_HASH, ring sizes
  1 <= min <= max <= 8M, gRFC A42).
* ``max_requests`` is the DEFAULT-priority circuit-breaker threshold (gRFC A32).
* Outlier detection fields and defaults as in gRFC A50; percentages must be <= 100.
* ``metadata.filter_metadata["meshlib.dev"]`` carries what xDS has no field for: the
  per-endpoint circuit breaker (``circuitBreaker``) and the retry budget
  (``retryBudget``) meshlib enforces; its schema is
  :mod:`meshlib.contract.cluster_metadata`, shared with the control plane.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import any_pb2, message

from meshlib.contract import (
    DEFAULT_MAX_REQUESTS,
    MESHLIB_METADATA,
    CircuitBreakerConfig,
    RetryBudgetConfig,
    SpiffeId,
)
from meshlib.contract.cluster_metadata import decode as decode_meshlib_metadata
from meshlib.xds._resources import CLUSTER, ResourceValidationError, seconds, unpack

__all__ = [
    "DEFAULT_MAX_REQUESTS",
    "MAX_RING_SIZE",
    "MESHLIB_METADATA",
    "CircuitBreakerConfig",
    "ClusterUpdate",
    "LbPolicy",
    "OutlierDetectionConfig",
    "RetryBudgetConfig",
    "UpstreamTls",
    "decode_cluster",
]

MAX_RING_SIZE = 8 * 1024 * 1024
_Cluster = cluster_pb2.Cluster
_RING_HASH = ring_hash_pb2.RingHash
_TYPE = "type.googleapis.com/"
_Invalid = Callable[[str], ResourceValidationError]


_UPSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"

@dataclass(frozen=True, slots=True, kw_only=True)
class LbPolicy:
    """How to pick an endpoint; ``choice_count`` for LEAST_REQUEST, ring sizes for
    RING_HASH."""

    name: Literal["ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH"] = "ROUND_ROBIN"
    choice_count: int = 2
    minimum_ring_size: int = 1024
    maximum_ring_size: int = MAX_RING_SIZE


@dataclass(frozen=True, slots=True, kw_only=True)
class OutlierDetectionConfig:
    """Outlier detection (gRFC A50 defaults); an ``enforcing_*`` of 0 disables that
    algorithm."""

    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 10
    consecutive_5xx: int = 5
    enforcing_consecutive_5xx: int = 100
    success_rate_stdev_factor: int = 1900
    enforcing_success_rate: int = 100
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    failure_percentage_threshold: int = 85
    enforcing_failure_percentage: int = 0
    failure_percentage_minimum_hosts: int = 5
    failure_percentage_request_volume: int = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterUpdate:
    """A decoded Cluster; ``eds_service_name`` is the EDS resource to subscribe to."""

    name: str
    eds_service_name: str
    lb_policy: LbPolicy = LbPolicy()
    max_requests: int = DEFAULT_MAX_REQUESTS
    outlier_detection: OutlierDetectionConfig | None = None
    circuit_breaker: CircuitBreakerConfig | None = None
    retry_budget: RetryBudgetConfig | None = None
    tls: UpstreamTls | None = None  # the destination takes mTLS


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """An ``UpstreamTlsContext``: connect with mTLS and check the server is one of
    ``identities`` (the SPIFFE IDs of its exact SAN matchers)."""

    identities: tuple[SpiffeId, ...]

    @property
    def server_name(self) -> str | None:
        """The name gRPC's handshake checks: the first identity's DNS form."""
        return self.identities[0].dns_name if self.identities else None


def decode_cluster(any_msg: any_pb2.Any) -> ClusterUpdate:
    """Decode and validate one CDS resource; raises :class:`ResourceValidationError`."""
    cluster = unpack(any_msg, _Cluster, CLUSTER)
    name = cluster.name

    def invalid(detail: str) -> ResourceValidationError:
        return ResourceValidationError(detail, type_url=CLUSTER, resource_name=name)

    if not name:
        raise invalid("Cluster has no name")
    if cluster.WhichOneof("cluster_discovery_type") != "type" or cluster.type != _Cluster.EDS:
        kind = _Cluster.DiscoveryType.Name(cluster.type) if cluster.HasField("type") else (
            cluster.WhichOneof("cluster_discovery_type") or "unset")
        raise invalid(f"cluster type {kind} is not supported (EDS only)")
    eds = cluster.eds_cluster_config
    if eds.eds_config.WhichOneof("config_source_specifier") not in ("ads", "self"):
        raise invalid("eds_cluster_config.eds_config: only ads and self are supported")
    max_requests = DEFAULT_MAX_REQUESTS
    for threshold in cluster.circuit_breakers.thresholds:
        if threshold.priority == base_pb2.DEFAULT and threshold.HasField("max_requests"):
            max_requests = threshold.max_requests.value
            break
    outlier = None
    if cluster.HasField("outlier_detection"):
        outlier = _outlier(cluster.outlier_detection, name, invalid)
    breaker, budget = _meshlib_settings(cluster, invalid)
    tls = _upstream_tls(cluster, invalid) if cluster.HasField("transport_socket") else None
    return ClusterUpdate(name=name, eds_service_name=eds.service_name or name,
                         lb_policy=_lb_policy(cluster, invalid), max_requests=max_requests,
                         outlier_detection=outlier, circuit_breaker=breaker, tls=tls,
                         retry_budget=budget)


def _meshlib_settings(cluster: cluster_pb2.Cluster, invalid: _Invalid
                      ) -> tuple[CircuitBreakerConfig | None, RetryBudgetConfig | None]:
    if MESHLIB_METADATA not in cluster.metadata.filter_metadata:
        return None, None
    try:
        settings = decode_meshlib_metadata(cluster.metadata.filter_metadata[MESHLIB_METADATA])
    except ValueError as err:
        raise invalid(f"metadata {err}") from err
    return settings.circuit_breaker, settings.retry_budget


def _upstream_tls(cluster: cluster_pb2.Cluster, invalid: _Invalid) -> UpstreamTls | None:
    socket = cluster.transport_socket
    if socket.typed_config.type_url.rsplit("/", 1)[-1] != _UPSTREAM_TLS:
        if socket.name in ("", "envoy.transport_sockets.raw_buffer"):
            return None
        raise invalid(f"transport_socket {socket.name!r}: only UpstreamTlsContext is "
                      "supported")
    context = tls_pb2.UpstreamTlsContext()
    _parse(socket.typed_config, context, invalid)
    common = context.common_tls_context
    which = common.WhichOneof("validation_context_type")
    if which == "combined_validation_context":
        validation = common.combined_validation_context.default_validation_context
    elif which == "validation_context":
        validation = common.validation_context
    else:
        validation = None
    sans: list[str] = []
    if validation is not None:
        sans += [m.exact for m in validation.match_subject_alt_names if m.exact]
        sans += [m.matcher.exact for m in validation.match_typed_subject_alt_names
                 if m.matcher.exact]
    if not sans:
        # Without a SAN to check, the handshake would accept any certificate of the
        # trust domain (or, with no certificate yet, fall back to plaintext): refuse.
        raise invalid("UpstreamTlsContext has no exact SAN matcher: meshlib checks the "
                      "destination's SPIFFE identity and will not connect without one")
    identities = []
    for san in sans:
        try:
            identities.append(SpiffeId.parse(san))
        except ValueError as err:
            raise invalid(f"UpstreamTlsContext SAN matcher: {err}") from err
    return UpstreamTls(tuple(dict.fromkeys(identities)))


def _lb_policy(cluster: cluster_pb2.Cluster, invalid: _Invalid) -> LbPolicy:
    if cluster.HasField("load_balancing_policy"):
        seen = []
        for policy in cluster.load_balancing_policy.policies:
            config = policy.typed_extension_config.typed_config
            decoded = _typed_policy(config, invalid)
            if decoded is not None:
                return decoded
            seen.append(config.type_url.removeprefix(_TYPE))
        raise invalid(f"load_balancing_policy: none supported among {seen}")
    if cluster.lb_policy == _Cluster.ROUND_ROBIN:
        return LbPolicy()
    if cluster.lb_policy == _Cluster.LEAST_REQUEST:
        least = cluster.least_request_lb_config
        return _least_request(_u32(least, "choice_count", 2), invalid)
    if cluster.lb_policy == _Cluster.RING_HASH:
        ring = cluster.ring_hash_lb_config
        return _ring_hash(ring.hash_function == _Cluster.RingHashLbConfig.XX_HASH, ring, invalid)
    raise invalid(f"lb_policy {_Cluster.LbPolicy.Name(cluster.lb_policy)} is not supported")


def _typed_policy(config: any_pb2.Any, invalid: _Invalid) -> LbPolicy | None:
    if config.type_url == _TYPE + round_robin_pb2.RoundRobin.DESCRIPTOR.full_name:
        return LbPolicy()
    if config.type_url == _TYPE + least_request_pb2.LeastRequest.DESCRIPTOR.full_name:
        least = least_request_pb2.LeastRequest()
        _parse(config, least, invalid)
        return _least_request(_u32(least, "choice_count", 2), invalid)
    if config.type_url == _TYPE + _RING_HASH.DESCRIPTOR.full_name:
        ring = _RING_HASH()
        _parse(config, ring, invalid)
        xx_hash = ring.hash_function in (_RING_HASH.DEFAULT_HASH, _RING_HASH.XX_HASH)
        return _ring_hash(xx_hash, ring, invalid)
    return None


def _parse(config: any_pb2.Any, out: message.Message, invalid: _Invalid) -> None:
    if not config.Unpack(out):
        raise invalid(f"cannot parse {config.type_url}")


def _u32(msg: message.Message, field: str, default: int) -> int:
    """A wrapper field's value, or ``default`` when unset."""
    return getattr(msg, field).value if msg.HasField(field) else default


def _least_request(count: int, invalid: _Invalid) -> LbPolicy:
    if count < 2:
        raise invalid(f"least request choice_count {count} < 2")
    return LbPolicy(name="LEAST_REQUEST", choice_count=count)


def _ring_hash(xx_hash: bool, ring: message.Message, invalid: _Invalid) -> LbPolicy:
    if not xx_hash:
        raise invalid("ring hash: only XX_HASH is supported")
    low = _u32(ring, "minimum_ring_size", 1024)
    high = _u32(ring, "maximum_ring_size", MAX_RING_SIZE)
    if not 1 <= low <= high <= MAX_RING_SIZE:
        raise invalid(f"ring hash: need 1 <= minimum_ring_size ({low}) <= maximum_ring_size "
                      f"({high}) <= {MAX_RING_SIZE}")
    return LbPolicy(name="RING_HASH", minimum_ring_size=low, maximum_ring_size=high)


def _outlier(od: outlier_detection_pb2.OutlierDetection, name: str, invalid: _Invalid
             ) -> OutlierDetectionConfig:
    defaults = OutlierDetectionConfig()
    values: dict[str, float | int] = {}
    for field in ("interval", "base_ejection_time", "max_ejection_time"):
        if od.HasField(field):
            values[field] = seconds(getattr(od, field), f"outlier_detection.{field}",
                                    type_url=CLUSTER, name=name)
    if "max_ejection_time" not in values:
        base = values.get("base_ejection_time", defaults.base_ejection_time)
        values["max_ejection_time"] = max(defaults.max_ejection_time, base)
    for field in _U32_FIELDS:
        if od.HasField(field):
            value = getattr(od, field).value
            if field in _PERCENT_FIELDS and value > 100:
                raise invalid(f"outlier_detection.{field}: {value} > 100")
            values[field] = value
    return replace(defaults, **values)


_U32_FIELDS = (
    "max_ejection_percent", "consecutive_5xx", "enforcing_consecutive_5xx",
    "success_rate_stdev_factor", "enforcing_success_rate", "success_rate_minimum_hosts",
    "success_rate_request_volume", "failure_percentage_threshold",
    "enforcing_failure_percentage", "failure_percentage_minimum_hosts",
    "failure_percentage_request_volume",
)
_PERCENT_FIELDS = frozenset({
    "max_ejection_percent", "enforcing_consecutive_5xx", "enforcing_success_rate",
    "failure_percentage_threshold", "enforcing_failure_percentage",
})
