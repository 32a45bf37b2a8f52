"""Parse the ``meshlib.dev/v1alpha1`` kinds: TrafficPolicy, AccessPolicy, MeshConfig.

Field names are the camelCase of the model's dataclass fields; defaults are the
model's. The CRD schemas in ``deploy/crds`` describe the same fields, enums and
bounds (a test keeps the two in agreement).
"""

from __future__ import annotations

import math
import re
from typing import Literal, cast

import grpc

from meshlib.contract import MTLS_MODES, MtlsMode, SpiffeId
from xds_server.model import (
    AccessPolicy,
    AccessRule,
    CircuitBreaker,
    FaultInjection,
    LoadBalancer,
    MeshConfig,
    ObjectRef,
    OutlierDetection,
    RateLimit,
    RetryBudget,
    RetryPolicy,
    TargetRef,
    TrafficPolicy,
)
from xds_server.sources.fields import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    Fields,
    ObjectContext,
    one_of,
    pattern,
)
from xds_server.sources.parse_core import Metadata

__all__ = [
    "GRPC_STATUS_CODES",
    "IDENTITY_PATTERN",
    "LOAD_BALANCER_TYPES",
    "METHOD_PATTERN",
    "MTLS_MODES",
    "NAMESPACE_PATTERN",
    "RETRYABLE_STATUS_CODES",
    "SERVICE_ACCOUNT_PATTERN",
    "parse_access_policy",
    "parse_mesh_config",
    "parse_traffic_policy",
]

#: Status code names accepted in ``abort.grpcStatus`` (all but OK).
GRPC_STATUS_CODES = tuple(c.name for c in grpc.StatusCode if c is not grpc.StatusCode.OK)
#: Codes accepted in ``retryOn``: the ones Envoy and gRPC can retry on (xDS
#: ``retry_on`` "gRPC retry on" conditions, gRFC A44); others would be silently ignored.
RETRYABLE_STATUS_CODES = (
    "CANCELLED", "DEADLINE_EXCEEDED", "INTERNAL", "RESOURCE_EXHAUSTED", "UNAVAILABLE",
)
LOAD_BALANCER_TYPES = ("ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH")
_ACTIONS = ("ALLOW", "DENY")
_MAX_RING_SIZE = 8_388_608

_TARGET_FIELDS = frozenset({"group", "kind", "name"})
_TRAFFIC_SPEC_FIELDS = frozenset(
    {
        "targetRef",
        "loadBalancer",
        "timeout",
        "retries",
        "circuitBreaker",
        "outlierDetection",
        "rateLimit",
        "faultInjection",
    }
)
_LB_FIELDS = frozenset({"type", "hashHeader", "choiceCount", "minimumRingSize", "maximumRingSize"})
_RETRY_FIELDS = frozenset({"attempts", "perTryTimeout", "retryOn", "backoff", "budget"})
_BACKOFF_FIELDS = frozenset({"baseInterval", "maxInterval"})
_BUDGET_FIELDS = frozenset({"percent", "minRetriesPerSecond"})
_BREAKER_FIELDS = frozenset(
    {"consecutiveFailures", "openDuration", "halfOpenProbes", "maxConcurrentRequests"}
)
_OUTLIER_FIELDS = frozenset(
    {
        "consecutiveFailures",
        "interval",
        "baseEjectionTime",
        "maxEjectionTime",
        "maxEjectionPercent",
        "failurePercentageThreshold",
        "failurePercentageMinimumHosts",
        "failurePercentageRequestVolume",
    }
)
_RATE_FIELDS = frozenset({"requestsPerSecond", "burst"})
_FAULT_FIELDS = frozenset({"delay", "abort"})
_DELAY_FIELDS = frozenset({"percent", "fixedDelay"})
_ABORT_FIELDS = frozenset({"percent", "grpcStatus", "httpStatus"})
_ACCESS_SPEC_FIELDS = frozenset({"targetRef", "mtls", "rules"})
_MTLS_FIELDS = frozenset({"mode"})
_RULE_FIELDS = frozenset({"action", "from", "to"})
_FROM_FIELDS = frozenset({"identities", "serviceAccounts", "namespaces"})
_TO_FIELDS = frozenset({"methods", "paths"})
_MESH_SPEC_FIELDS = frozenset(
    {"trustDomain", "clusterDomain", "mtls", "certificateTTL", "tracing", "accessLogs", "sidecar"}
)

_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
# Patterns shared with the CRDs; "*" is a wildcard in identities, accounts and names.
# Namespaces and service accounts are DNS-1123 labels (SpiffeId's segments), "*" aside.
_LABEL = r"[a-z0-9*]([-a-z0-9*]{0,61}[a-z0-9*])?"
IDENTITY_PATTERN = re.compile(r"\*|spiffe://[^/\s]+(/\S*)?")
SERVICE_ACCOUNT_PATTERN = re.compile(rf"({_LABEL}/)?{_LABEL}")
NAMESPACE_PATTERN = re.compile(_LABEL)
_MESH_IDENTITY_PATH = re.compile(r"spiffe://[^/]+/ns/[^/]+/sa/[^/]+")
METHOD_PATTERN = re.compile(r"\*|/\S*")


def _object_ref(kind: str, ctx: ObjectContext, meta: Metadata) -> ObjectRef:
    return ObjectRef(kind=kind, namespace=meta.namespace, name=meta.name, source=ctx.source)


def _target_ref(ctx: ObjectContext, spec: Fields, meta: Metadata) -> TargetRef:
    target = spec.child("targetRef", _TARGET_FIELDS, required=True)
    if target is None:
        return TargetRef(name="")
    target.string("group", check=pattern("", 'the core group ""'))
    target.string("kind", "Service", check=one_of(("Service",)))
    name = target.string("name", required=True, check=pattern(DNS_LABEL, "a Service name"))
    if name:
        ctx.refer(target.at("name"), "targetRef", meta.namespace, name)
    return TargetRef(name=name)


# ---------------------------------------------------------------------- TrafficPolicy


def parse_traffic_policy(ctx: ObjectContext, obj: Fields, meta: Metadata) -> TrafficPolicy:
    """A ``TrafficPolicy``: how clients call its target Service."""
    spec = obj.child("spec", _TRAFFIC_SPEC_FIELDS, required=True)
    if spec is None:
        return TrafficPolicy(
            name=meta.name, namespace=meta.namespace, target_ref=TargetRef(name="")
        )
    lb = spec.child("loadBalancer", _LB_FIELDS)
    retries = spec.child("retries", _RETRY_FIELDS)
    breaker = spec.child("circuitBreaker", _BREAKER_FIELDS)
    outlier = spec.child("outlierDetection", _OUTLIER_FIELDS)
    rate = spec.child("rateLimit", _RATE_FIELDS)
    fault = spec.child("faultInjection", _FAULT_FIELDS)
    return TrafficPolicy(
        name=meta.name,
        namespace=meta.namespace,
        target_ref=_target_ref(ctx, spec, meta),
        load_balancer=_load_balancer(lb) if lb else None,
        timeout=spec.duration("timeout", None, positive=True),
        retries=_retries(retries) if retries else None,
        circuit_breaker=_circuit_breaker(breaker) if breaker else None,
        outlier_detection=_outlier_detection(outlier) if outlier else None,
        rate_limit=_rate_limit(rate) if rate else None,
        fault_injection=_fault_injection(fault) if fault else None,
        ref=_object_ref("TrafficPolicy", ctx, meta),
    )


def _load_balancer(lb: Fields) -> LoadBalancer:
    lb_type = lb.string("type", "ROUND_ROBIN", check=one_of(LOAD_BALANCER_TYPES))
    hash_header = lb.string("hashHeader", check=pattern(_HEADER_NAME, "a header name"))
    if lb_type == "RING_HASH" and not lb.has("hashHeader"):
        lb.error("hashHeader", "is required when type is RING_HASH")
    minimum = lb.integer("minimumRingSize", 1024, minimum=1, maximum=_MAX_RING_SIZE)
    maximum = lb.integer("maximumRingSize", _MAX_RING_SIZE, minimum=1, maximum=_MAX_RING_SIZE)
    if minimum > maximum:
        lb.error("maximumRingSize", "must be >= minimumRingSize")
    return LoadBalancer(
        type=cast(Literal["ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH"], lb_type),
        hash_header=hash_header.lower(),
        choice_count=lb.integer("choiceCount", 2, minimum=2),
        minimum_ring_size=minimum,
        maximum_ring_size=maximum,
    )


def _retries(retries: Fields) -> RetryPolicy:
    defaults = RetryPolicy()
    retry_on = defaults.retry_on
    if retries.has("retryOn"):
        retry_on = retries.strings(
            "retryOn", required=True, check=one_of(RETRYABLE_STATUS_CODES), unique=True
        )
    base, maximum = defaults.base_interval, defaults.max_interval
    backoff = retries.child("backoff", _BACKOFF_FIELDS)
    if backoff:
        base = backoff.duration("baseInterval", base, positive=True)
        # As Envoy: the maximum defaults to ten times the base interval.
        maximum = backoff.duration("maxInterval", max(maximum, 10 * base), positive=True)
        if base > maximum:
            backoff.error("maxInterval", "must not be shorter than baseInterval")
    budget = defaults.budget
    spec = retries.child("budget", _BUDGET_FIELDS)
    if spec:
        budget = RetryBudget(
            percent=spec.percent("percent", budget.percent),
            min_retries_per_second=spec.integer(
                "minRetriesPerSecond", budget.min_retries_per_second, minimum=0
            ),
        )
    return RetryPolicy(
        attempts=retries.integer("attempts", defaults.attempts, minimum=1, maximum=10),
        per_try_timeout=retries.duration("perTryTimeout", None, positive=True),
        retry_on=retry_on,
        base_interval=base,
        max_interval=maximum,
        budget=budget,
    )


def _circuit_breaker(spec: Fields) -> CircuitBreaker:
    d = CircuitBreaker()
    return CircuitBreaker(
        consecutive_failures=spec.integer("consecutiveFailures", d.consecutive_failures, minimum=1),
        open_duration=spec.duration("openDuration", d.open_duration, positive=True),
        half_open_probes=spec.integer("halfOpenProbes", d.half_open_probes, minimum=1),
        max_concurrent_requests=spec.integer(
            "maxConcurrentRequests", d.max_concurrent_requests, minimum=1
        ),
    )


def _outlier_detection(spec: Fields) -> OutlierDetection:
    d = OutlierDetection()
    base = spec.duration("baseEjectionTime", d.base_ejection_time, positive=True)
    # As Envoy: the maximum defaults to max(300s, baseEjectionTime).
    maximum = spec.duration("maxEjectionTime", max(d.max_ejection_time, base), positive=True)
    if base > maximum:
        spec.error("maxEjectionTime", "must not be shorter than baseEjectionTime")
    return OutlierDetection(
        consecutive_failures=spec.integer("consecutiveFailures", d.consecutive_failures, minimum=1),
        interval=spec.duration("interval", d.interval, positive=True),
        base_ejection_time=base,
        max_ejection_time=maximum,
        max_ejection_percent=spec.integer(
            "maxEjectionPercent", d.max_ejection_percent, minimum=0, maximum=100
        ),
        failure_percentage_threshold=spec.integer(
            "failurePercentageThreshold", None, minimum=0, maximum=100
        ),
        failure_percentage_minimum_hosts=spec.integer(
            "failurePercentageMinimumHosts", d.failure_percentage_minimum_hosts, minimum=0
        ),
        failure_percentage_request_volume=spec.integer(
            "failurePercentageRequestVolume", d.failure_percentage_request_volume, minimum=0
        ),
    )


def _rate_limit(spec: Fields) -> RateLimit:
    rps = spec.number("requestsPerSecond", 1.0, required=True, positive=True)
    return RateLimit(
        requests_per_second=rps,
        burst=spec.integer("burst", max(1, math.ceil(rps)), minimum=1),
    )


def _fault_injection(spec: Fields) -> FaultInjection:
    d = FaultInjection()
    if not spec.has("delay") and not spec.has("abort"):
        spec.ctx.error(spec.path, "must set delay, abort or both")
    delay_percent, delay = d.delay_percent, d.delay
    delay_spec = spec.child("delay", _DELAY_FIELDS)
    if delay_spec:
        delay_percent = delay_spec.percent("percent", 0.0, required=True)
        delay = delay_spec.duration("fixedDelay", 0.0, required=True, positive=True)
    abort_percent, grpc_status, http_status = (
        d.abort_percent,
        d.abort_grpc_status,
        d.abort_http_status,
    )
    abort = spec.child("abort", _ABORT_FIELDS)
    if abort:
        abort_percent = abort.percent("percent", 0.0, required=True)
        grpc_status = abort.string("grpcStatus", grpc_status, check=one_of(GRPC_STATUS_CODES))
        http_status = abort.integer("httpStatus", http_status, minimum=200, maximum=599)
    return FaultInjection(
        delay_percent=delay_percent,
        delay=delay,
        abort_percent=abort_percent,
        abort_grpc_status=grpc_status,
        abort_http_status=http_status,
    )


# ----------------------------------------------------------------------- AccessPolicy


def _mtls_mode(spec: Fields, default: str | None) -> str | None:
    mtls = spec.child("mtls", _MTLS_FIELDS)
    if mtls is None:
        return default
    return mtls.string("mode", default, required=True, check=one_of(MTLS_MODES))


def parse_access_policy(ctx: ObjectContext, obj: Fields, meta: Metadata) -> AccessPolicy:
    """An ``AccessPolicy``: mTLS mode and ALLOW/DENY rules for its target Service.

    Each rule's ``from`` entries are flattened into one set of alternatives
    (identities, service accounts, namespaces), and its ``to`` entries likewise.
    """
    spec = obj.child("spec", _ACCESS_SPEC_FIELDS, required=True)
    if spec is None:
        return AccessPolicy(name=meta.name, namespace=meta.namespace, target_ref=TargetRef(name=""))
    target = _target_ref(ctx, spec, meta)
    mode = _mtls_mode(spec, None)
    return AccessPolicy(
        name=meta.name,
        namespace=meta.namespace,
        target_ref=target,
        mtls_mode=cast(MtlsMode | None, mode),
        rules=tuple(_access_rule(r) for r in spec.children("rules", _RULE_FIELDS)),
        ref=_object_ref("AccessPolicy", ctx, meta),
    )


def _identity(value: str) -> str | None:
    """A SPIFFE ID or "*"; one in the mesh's ``/ns/<ns>/sa/<sa>`` form, without
    wildcards, must be one a certificate can carry (DNS-label segments)."""
    problem = pattern(IDENTITY_PATTERN, 'a SPIFFE ID (spiffe://...) or "*"')(value)
    if problem is None and "*" not in value and _MESH_IDENTITY_PATH.fullmatch(value):
        try:
            SpiffeId.parse(value)
        except ValueError as err:
            return f"can never match: {err}"
    return problem


def _access_rule(rule: Fields) -> AccessRule:
    action = rule.string("action", "DENY", required=True, check=one_of(_ACTIONS))
    identities: list[str] = []
    accounts: list[str] = []
    namespaces: list[str] = []
    for key, what in (("from", "caller"), ("to", "method")):
        if rule.raw(key) == []:
            rule.error(key, f"must not be empty (leave it out to match any {what})")
    for source in rule.children("from", _FROM_FIELDS):
        if not any(source.has(k) for k in _FROM_FIELDS):
            source.ctx.error(source.path, "must set identities, serviceAccounts or namespaces")
        identities += source.strings(
            "identities",
            non_empty=True,
            check=_identity,
        )
        accounts += source.strings(
            "serviceAccounts",
            non_empty=True,
            check=pattern(SERVICE_ACCOUNT_PATTERN, 'a service account, "name" or "namespace/name" '
                          "(DNS labels: lower-case letters, digits and '-')"),
        )
        namespaces += source.strings(
            "namespaces", non_empty=True,
            check=pattern(NAMESPACE_PATTERN, "a namespace name (a DNS label)"),
        )
    methods: list[str] = []
    paths: list[str] = []
    for target in rule.children("to", _TO_FIELDS):
        if not any(target.has(k) for k in _TO_FIELDS):
            target.ctx.error(target.path, "must set methods, paths or both")
        methods += target.strings(
            "methods",
            non_empty=True,
            check=pattern(METHOD_PATTERN, 'a method like "/pkg.Service/Method"'),
        )
        paths += target.strings(
            "paths", non_empty=True, check=pattern(METHOD_PATTERN, 'a path starting with "/"')
        )
    return AccessRule(
        action=cast(Literal["ALLOW", "DENY"], action),
        from_identities=tuple(identities),
        from_service_accounts=tuple(accounts),
        from_namespaces=tuple(namespaces),
        to_methods=tuple(methods),
        to_paths=tuple(paths),
    )


# ------------------------------------------------------------------------- MeshConfig


def parse_mesh_config(ctx: ObjectContext, obj: Fields, meta: Metadata) -> MeshConfig:
    """The ``MeshConfig`` (cluster-scoped, at most one per mesh)."""
    d = MeshConfig()
    spec = obj.child("spec", _MESH_SPEC_FIELDS)
    ref = ObjectRef(kind="MeshConfig", namespace="", name=meta.name, source=ctx.source)
    if spec is None:
        return MeshConfig(name=meta.name, ref=ref)
    domain = pattern(DNS_SUBDOMAIN, "a DNS name like cluster.local")
    tracing = spec.child("tracing", {"sampling"})
    logs = spec.child("accessLogs", {"enabled"})
    sidecar = spec.child("sidecar", {"outboundPort"})
    mode = _mtls_mode(spec, d.default_mtls_mode)
    return MeshConfig(
        name=meta.name,
        trust_domain=spec.string("trustDomain", d.trust_domain, check=domain),
        cluster_domain=spec.string("clusterDomain", d.cluster_domain, check=domain),
        default_mtls_mode=cast(MtlsMode, mode),
        certificate_ttl=spec.duration("certificateTTL", d.certificate_ttl, positive=True),
        tracing_sampling=(
            tracing.number("sampling", d.tracing_sampling, minimum=0, maximum=1)
            if tracing
            else d.tracing_sampling
        ),
        access_logs=logs.boolean("enabled", d.access_logs) if logs else d.access_logs,
        sidecar_outbound_port=(
            sidecar.integer("outboundPort", d.sidecar_outbound_port, minimum=1, maximum=65535)
            if sidecar
            else d.sidecar_outbound_port
        ),
        ref=ref,
    )
