"""TrafficPolicy, AccessPolicy and MeshConfig (meshlib.dev/v1alpha1)."""

from __future__ import annotations

import grpc
import pytest

from tests.xds_server.sources.source_builders import (
    FULL_TRAFFIC_SPEC,
    lines,
    mesh_config,
    parse,
    parse_ok,
    policy,
    service,
)
from xds_server.model import (
    AccessRule,
    CircuitBreaker,
    FaultInjection,
    LoadBalancer,
    MeshConfig,
    OutlierDetection,
    RateLimit,
    RetryBudget,
    RetryPolicy,
    TargetRef,
)
from xds_server.sources.parse_policies import GRPC_STATUS_CODES


def test_traffic_policy_every_field() -> None:
    model = parse_ok(service(), policy("TrafficPolicy", **FULL_TRAFFIC_SPEC))
    (tp,) = model.traffic_policies
    assert tp.target_ref == TargetRef(name="reviews")
    assert tp.load_balancer == LoadBalancer(
        type="RING_HASH", hash_header="x-user", minimum_ring_size=64, maximum_ring_size=4096
    )
    assert tp.timeout == 2.0
    assert tp.retries == RetryPolicy(
        attempts=4,
        per_try_timeout=0.5,
        retry_on=("UNAVAILABLE", "RESOURCE_EXHAUSTED"),
        base_interval=0.01,
        max_interval=1.0,
        budget=RetryBudget(percent=12.5, min_retries_per_second=3),
    )
    assert tp.circuit_breaker == CircuitBreaker(
        consecutive_failures=3, open_duration=60.0, half_open_probes=2, max_concurrent_requests=100
    )
    assert tp.outlier_detection == OutlierDetection(
        consecutive_failures=7,
        interval=5.0,
        base_ejection_time=15.0,
        max_ejection_time=120.0,
        max_ejection_percent=50,
        failure_percentage_threshold=80,
        failure_percentage_minimum_hosts=3,
        failure_percentage_request_volume=20,
    )
    assert tp.rate_limit == RateLimit(requests_per_second=50.5, burst=100)
    assert tp.fault_injection == FaultInjection(
        delay_percent=10.0,
        delay=0.1,
        abort_percent=1.5,
        abort_grpc_status="INTERNAL",
        abort_http_status=500,
    )
    assert model.traffic_policy_for(model.services[0]) is tp


def test_traffic_policy_defaults_are_the_models() -> None:
    spec = {
        "loadBalancer": {},
        "retries": {},
        "circuitBreaker": {},
        "outlierDetection": {},
        "rateLimit": {"requestsPerSecond": 2.5},
    }
    (tp,) = parse_ok(service(), policy("TrafficPolicy", **spec)).traffic_policies
    assert tp.load_balancer == LoadBalancer()
    assert tp.retries == RetryPolicy()
    assert tp.circuit_breaker == CircuitBreaker()
    assert tp.outlier_detection == OutlierDetection()
    assert tp.rate_limit == RateLimit(requests_per_second=2.5, burst=3)
    assert (tp.timeout, tp.fault_injection) == (None, None)


def test_dependent_defaults_follow_envoy() -> None:
    spec = {
        "retries": {"backoff": {"baseInterval": "1s"}},
        "outlierDetection": {"baseEjectionTime": "10m"},
    }
    (tp,) = parse_ok(service(), policy("TrafficPolicy", **spec)).traffic_policies
    assert tp.retries is not None and tp.retries.max_interval == 10.0  # 10 x base
    assert tp.outlier_detection is not None
    assert tp.outlier_detection.max_ejection_time == 600.0  # max(300s, base)


def test_retry_codes_are_grpc_status_names() -> None:
    assert set(GRPC_STATUS_CODES) == {c.name for c in grpc.StatusCode} - {"OK"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"loadBalancer": {"type": "RING_HASH"}},
            "spec.loadBalancer.hashHeader: is required when type is RING_HASH",
        ),
        (
            {"loadBalancer": {"type": "RANDOM"}},
            "spec.loadBalancer.type: must be one of ROUND_ROBIN, LEAST_REQUEST, RING_HASH; "
            'got "RANDOM"',
        ),
        (
            {"loadBalancer": {"type": "round_robin"}},
            "spec.loadBalancer.type: must be one of ROUND_ROBIN, LEAST_REQUEST, RING_HASH; "
            'got "round_robin" (did you mean "ROUND_ROBIN"?)',
        ),
        (
            {"loadBalancer": {"choiceCount": 1}},
            "spec.loadBalancer.choiceCount: must be an integer >= 2, got 1",
        ),
        (
            {"loadBalancer": {"minimumRingSize": 10, "maximumRingSize": 5}},
            "spec.loadBalancer.maximumRingSize: must be >= minimumRingSize",
        ),
        (
            {"timeout": "2 seconds"},
            'spec.timeout: must be a duration like "1s", "500ms" or "1m30s", got string '
            '"2 seconds"',
        ),
        ({"timeout": "0s"}, 'spec.timeout: must be longer than 0s, got "0s"'),
        (
            {"retries": {"retryOn": ["UNAVAILBLE"]}},
            "spec.retries.retryOn[0]: must be one of CANCELLED, DEADLINE_EXCEEDED, INTERNAL, "
            'RESOURCE_EXHAUSTED, UNAVAILABLE; got "UNAVAILBLE" (did you mean "UNAVAILABLE"?)',
        ),
        (
            {"retries": {"retryOn": ["NOT_FOUND"]}},
            "spec.retries.retryOn[0]: must be one of CANCELLED, DEADLINE_EXCEEDED, INTERNAL, "
            'RESOURCE_EXHAUSTED, UNAVAILABLE; got "NOT_FOUND"',
        ),
        (
            {"retries": {"retryOn": ["UNAVAILABLE", "UNAVAILABLE"]}},
            'spec.retries.retryOn[1]: duplicate value "UNAVAILABLE"',
        ),
        ({"retries": {"retryOn": []}}, "spec.retries.retryOn: must not be empty"),
        (
            {"retries": {"retryOn": "UNAVAILABLE"}},
            'spec.retries.retryOn: must be a list of strings, got string "UNAVAILABLE"',
        ),
        (
            {"retries": {"attempts": 0}},
            "spec.retries.attempts: must be an integer between 1 and 10, got 0",
        ),
        (
            {"retries": {"backoff": {"baseInterval": "1s", "maxInterval": "100ms"}}},
            "spec.retries.backoff.maxInterval: must not be shorter than baseInterval",
        ),
        (
            {"retries": {"budget": {"percent": 120}}},
            "spec.retries.budget.percent: must be a number between 0 and 100, got 120",
        ),
        (
            {"circuitBreaker": {"openDuration": "30"}},
            'spec.circuitBreaker.openDuration: must be a duration like "1s", "500ms" or "1m30s", '
            'got string "30"',
        ),
        (
            {"outlierDetection": {"maxEjectionPercent": 101}},
            "spec.outlierDetection.maxEjectionPercent: must be an integer between 0 and 100, "
            "got 101",
        ),
        (
            {"outlierDetection": {"baseEjectionTime": "1m", "maxEjectionTime": "30s"}},
            "spec.outlierDetection.maxEjectionTime: must not be shorter than baseEjectionTime",
        ),
        ({"rateLimit": {"burst": 10}}, "spec.rateLimit.requestsPerSecond: is required"),
        (
            {"rateLimit": {"requestsPerSecond": 0}},
            "spec.rateLimit.requestsPerSecond: must be a number > 0, got 0",
        ),
        ({"faultInjection": {}}, "spec.faultInjection: must set delay, abort or both"),
        (
            {"faultInjection": {"delay": {"fixedDelay": "1s"}}},
            "spec.faultInjection.delay.percent: is required",
        ),
        (
            {"faultInjection": {"abort": {"percent": 5, "httpStatus": 600}}},
            "spec.faultInjection.abort.httpStatus: must be an integer between 200 and 599, got 600",
        ),
        ({"timout": "1s"}, 'spec.timout: unknown field (did you mean "timeout"?)'),
    ],
)
def test_traffic_policy_problems(spec: dict, expected: str) -> None:
    _, problems = parse(service(), policy("TrafficPolicy", **spec))
    assert lines(problems) == [f"mesh.yaml: TrafficPolicy default/reviews: {expected}"]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ({"name": "ratings"}, "spec.targetRef.name: target Service default/ratings not found"),
        (
            {"kind": "Deployment", "name": "reviews"},
            'spec.targetRef.kind: must be "Service", got "Deployment"',
        ),
        (
            {"group": "apps", "name": "reviews"},
            'spec.targetRef.group: must be the core group "", got "apps"',
        ),
        ({}, "spec.targetRef.name: is required"),
    ],
)
def test_target_ref_problems(target: dict, expected: str) -> None:
    obj = policy("AccessPolicy")
    obj["spec"]["targetRef"] = target
    _, problems = parse(service(), obj)
    assert lines(problems) == [f"mesh.yaml: AccessPolicy default/reviews: {expected}"]


def test_two_traffic_policies_for_one_service() -> None:
    older = policy("TrafficPolicy", "b-older", timeout="1s")
    older["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    newer = policy("TrafficPolicy", "a-newer", timeout="2s")
    newer["metadata"]["creationTimestamp"] = "2024-06-01T00:00:00Z"
    model, problems = parse(service(), newer, older)
    assert lines(problems) == [
        "mesh.yaml: TrafficPolicy default/a-newer: spec.targetRef: conflicts with TrafficPolicy "
        "default/b-older (mesh.yaml), which also targets Service reviews and takes precedence; "
        "this policy is ignored"
    ]
    assert [p.name for p in model.traffic_policies] == ["b-older"]


def test_without_timestamps_the_first_name_wins() -> None:
    model, problems = parse(service(), policy("TrafficPolicy", "b"), policy("TrafficPolicy", "a"))
    assert [p.name for p in model.traffic_policies] == ["a"]
    assert [p.obj for p in problems] == ["TrafficPolicy default/b"]


# --------------------------------------------------------------------- AccessPolicy


def test_access_policy_flattens_from_and_to() -> None:
    obj = policy(
        "AccessPolicy",
        mtls={"mode": "STRICT"},
        rules=[
            {
                "action": "ALLOW",
                "from": [
                    {
                        "identities": ["spiffe://cluster.local/ns/default/sa/frontend"],
                        "namespaces": ["shop"],
                    },
                    {"serviceAccounts": ["default/frontend", "batch"]},
                    {"identities": ["spiffe://cluster.local/ns/ops/*"]},
                ],
                "to": [
                    {"methods": ["/demo.Reviews/Get"]},
                    {"methods": ["/demo.Reviews/*"], "paths": ["/healthz"]},
                ],
            },
            {"action": "DENY", "from": [{"namespaces": ["*-test"]}]},
            {"action": "ALLOW"},
        ],
    )
    (ap,) = parse_ok(service(), obj).access_policies
    assert ap.mtls_mode == "STRICT"
    assert ap.rules == (
        AccessRule(
            action="ALLOW",
            from_identities=(
                "spiffe://cluster.local/ns/default/sa/frontend",
                "spiffe://cluster.local/ns/ops/*",
            ),
            from_service_accounts=("default/frontend", "batch"),
            from_namespaces=("shop",),
            to_methods=("/demo.Reviews/Get", "/demo.Reviews/*"),
            to_paths=("/healthz",),
        ),
        AccessRule(action="DENY", from_namespaces=("*-test",)),
        AccessRule(action="ALLOW"),
    )


def test_access_policy_without_mtls_uses_the_mesh_default() -> None:
    (ap,) = parse_ok(service(), policy("AccessPolicy")).access_policies
    assert (ap.mtls_mode, ap.rules) == (None, ())


def test_several_access_policies_for_one_service_are_fine() -> None:
    model = parse_ok(service(), policy("AccessPolicy", "a"), policy("AccessPolicy", "b"))
    assert [p.name for p in model.access_policies_for(model.services[0])] == ["a", "b"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"mtls": {"mode": "strict"}},
            'spec.mtls.mode: must be one of STRICT, PERMISSIVE, DISABLE; got "strict" '
            '(did you mean "STRICT"?)',
        ),
        ({"mtls": {}}, "spec.mtls.mode: is required"),
        ({"rules": [{"from": [{"namespaces": ["shop"]}]}]}, "spec.rules[0].action: is required"),
        (
            {"rules": [{"action": "ALLOW", "from": [{}]}]},
            "spec.rules[0].from[0]: must set identities, serviceAccounts or namespaces",
        ),
        (
            {"rules": [{"action": "ALLOW", "from": []}]},
            "spec.rules[0].from: must not be empty (leave it out to match any caller)",
        ),
        (
            {"rules": [{"action": "ALLOW", "from": [{"identities": []}]}]},
            "spec.rules[0].from[0].identities: must not be empty",
        ),
        (
            {"rules": [{"action": "ALLOW", "from": [{"identities": ["frontend"]}]}]},
            'spec.rules[0].from[0].identities[0]: must be a SPIFFE ID (spiffe://...) or "*", '
            'got "frontend"',
        ),
        (
            {"rules": [{"action": "ALLOW", "from": [{"serviceAccounts": ["a/b/c"]}]}]},
            'spec.rules[0].from[0].serviceAccounts[0]: must be a service account, "name" or '
            '"namespace/name" (DNS labels: lower-case letters, digits and \'-\'), got "a/b/c"',
        ),
        (  # would share payments.shop/api's DNS name
            {"rules": [{"action": "ALLOW", "from": [{"serviceAccounts": ["shop/api.payments"]}]}]},
            'spec.rules[0].from[0].serviceAccounts[0]: must be a service account, "name" or '
            '"namespace/name" (DNS labels: lower-case letters, digits and \'-\'), got '
            '"shop/api.payments"',
        ),
        (
            {"rules": [{"action": "ALLOW", "from": [{"serviceAccounts": ["Cart"]}]}]},
            'spec.rules[0].from[0].serviceAccounts[0]: must be a service account, "name" or '
            '"namespace/name" (DNS labels: lower-case letters, digits and \'-\'), got "Cart"',
        ),
        (
            {"rules": [{"action": "ALLOW", "from": [{"namespaces": ["payments.shop"]}]}]},
            'spec.rules[0].from[0].namespaces[0]: must be a namespace name (a DNS label), '
            'got "payments.shop"',
        ),
        (
            {"rules": [{"action": "ALLOW", "from": [
                {"identities": ["spiffe://cluster.local/ns/shop/sa/Cart"]}]}]},
            "spec.rules[0].from[0].identities[0]: can never match: invalid service account "
            "'Cart' in a SPIFFE ID: must be a DNS-1123 label (lower-case letters, digits "
            "and '-', starting and ending with a letter or digit, at most 63 characters)",
        ),
        (
            {"rules": [{"action": "ALLOW", "to": [{"methods": ["demo.Reviews/Get"]}]}]},
            'spec.rules[0].to[0].methods[0]: must be a method like "/pkg.Service/Method", '
            'got "demo.Reviews/Get"',
        ),
        (
            {"rules": [{"action": "ALLOW", "to": [{}]}]},
            "spec.rules[0].to[0]: must set methods, paths or both",
        ),
    ],
)
def test_access_policy_problems(spec: dict, expected: str) -> None:
    _, problems = parse(service(), policy("AccessPolicy", **spec))
    assert lines(problems) == [f"mesh.yaml: AccessPolicy default/reviews: {expected}"]


# ----------------------------------------------------------------------- MeshConfig


def test_mesh_config_every_field() -> None:
    obj = mesh_config(
        trustDomain="example.org",
        clusterDomain="k8s.local",
        mtls={"mode": "STRICT"},
        certificateTTL="1h30m",
        tracing={"sampling": 0.5},
        accessLogs={"enabled": True},
        sidecar={"outboundPort": 15006},
    )
    obj["metadata"]["namespace"] = "ignored"  # cluster-scoped, as the API server does
    config = parse_ok(obj).mesh_config
    assert config == MeshConfig(
        name="mesh",
        trust_domain="example.org",
        cluster_domain="k8s.local",
        default_mtls_mode="STRICT",
        certificate_ttl=5400.0,
        tracing_sampling=0.5,
        access_logs=True,
        sidecar_outbound_port=15006,
    )
    assert config.ref is not None and config.ref.source == "mesh.yaml"


def test_no_mesh_config_gives_the_defaults() -> None:
    assert parse_ok(service()).mesh_config == MeshConfig()
    assert parse_ok(mesh_config()).mesh_config == MeshConfig()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"tracing": {"sampling": 10}},
            "spec.tracing.sampling: must be a number between 0 and 1, got 10",
        ),
        (
            {"accessLogs": {"enabled": "yes"}},
            'spec.accessLogs.enabled: must be true or false, got string "yes"',
        ),
        (
            {"sidecar": {"outboundPort": 0}},
            "spec.sidecar.outboundPort: must be an integer between 1 and 65535, got 0",
        ),
        (
            {"trustDomain": "Cluster.Local"},
            'spec.trustDomain: must be a DNS name like cluster.local, got "Cluster.Local"',
        ),
        (
            {"certificateTTL": "1d"},
            "spec.certificateTTL: must be a duration like "
            '"1s", "500ms" or "1m30s", got string "1d"',
        ),
    ],
)
def test_mesh_config_problems(spec: dict, expected: str) -> None:
    _, problems = parse(mesh_config(**spec))
    assert lines(problems) == [f"mesh.yaml: MeshConfig mesh: {expected}"]


def test_more_than_one_mesh_config() -> None:
    model, problems = parse(mesh_config("other", trustDomain="other.org"), mesh_config())
    assert lines(problems) == [
        "mesh.yaml: MeshConfig other: only one MeshConfig is allowed; MeshConfig mesh "
        "(mesh.yaml) takes precedence and this one is ignored"
    ]
    assert model.mesh_config.name == "mesh"
