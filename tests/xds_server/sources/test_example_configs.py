"""examples/mesh loads cleanly with the documented content; examples/invalid fails as pinned."""

from __future__ import annotations

import pytest

from tests.xds_server.sources.source_builders import ROOT, lines
from xds_server.model import BackendRef, HeaderMatch, ParentRef, RouteMatch
from xds_server.sources import check, load_model


def test_mesh_example_has_no_problem() -> None:
    assert lines(check(ROOT / "examples" / "mesh")) == []


def test_mesh_example_content() -> None:
    model = load_model(ROOT / "examples" / "mesh")
    assert [s.name for s in model.services] == [
        "products", "reviews", "reviews-http", "reviews-v1", "reviews-v2"]

    def backends(name: str) -> list[tuple[str, int]]:
        svc = model.service("default", name)
        assert svc is not None
        assert [(p.name, p.port, p.protocol) for p in svc.ports] == [("grpc", 50051, "grpc")]
        return sorted(
            (address, port.port)
            for eps in model.endpoint_slices_for(svc)
            for port in eps.ports
            if port.name == "grpc"
            for ep in eps.endpoints
            if ep.ready
            for address in ep.addresses
        )

    assert backends("reviews") == [("127.0.0.1", 50061), ("127.0.0.1", 50062), ("127.0.0.1", 50063)]
    assert backends("reviews-v1") == [("127.0.0.1", 50061), ("127.0.0.1", 50062)]
    assert backends("reviews-v2") == [("127.0.0.1", 50063)]

    (route,) = model.routes
    assert route.kind == "GRPCRoute"
    assert route.parent_refs == (ParentRef(name="reviews", namespace="default", port=50051),)
    canary, split = route.rules
    assert canary.matches == (RouteMatch(headers=(HeaderMatch(name="x-canary", value="true"),)),)
    assert canary.backend_refs == (
        BackendRef(name="reviews-v2", namespace="default", port=50051, weight=100),
    )
    assert split.matches == ()
    assert split.backend_refs == (
        BackendRef(name="reviews-v1", namespace="default", port=50051, weight=90),
        BackendRef(name="reviews-v2", namespace="default", port=50051, weight=10),
    )

    reviews = model.service("default", "reviews")
    assert reviews is not None
    policy = model.traffic_policy_for(reviews)
    assert policy is not None and policy.load_balancer is not None
    assert policy.load_balancer.type == "ROUND_ROBIN"
    assert policy.timeout == 2.0
    assert policy.retries is not None
    assert (policy.retries.attempts, policy.retries.retry_on) == (3, ("UNAVAILABLE",))
    # Ejection is a cluster setting: it sits on the backend the route sends to.
    v1 = model.service("default", "reviews-v1")
    assert v1 is not None
    v1_policy = model.traffic_policy_for(v1)
    assert v1_policy is not None and v1_policy.outlier_detection is not None
    assert v1_policy.outlier_detection.failure_percentage_threshold == 50
    (access,) = model.access_policies_for(reviews)
    assert access.mtls_mode == "PERMISSIVE"
    assert [r.action for r in access.rules] == ["ALLOW"]
    assert model.mesh_config.ref is not None  # from mesh.yaml, not the defaults


INVALID_EXPECTED = """\
examples/invalid/policies.yaml: TrafficPolicy shop/orders: spec.loadBalancer.hashHeader: is required when type is RING_HASH
examples/invalid/policies.yaml: TrafficPolicy shop/orders: spec.timeout: must be a duration like "1s", "500ms" or "1m30s", got string "2 seconds"
examples/invalid/policies.yaml: TrafficPolicy shop/orders: spec.retries.retryOn[1]: must be one of CANCELLED, DEADLINE_EXCEEDED, INTERNAL, RESOURCE_EXHAUSTED, UNAVAILABLE; got "UNAVAILBLE" (did you mean "UNAVAILABLE"?)
examples/invalid/policies.yaml: TrafficPolicy shop/orders-fast: spec.targetRef: conflicts with TrafficPolicy shop/orders (examples/invalid/policies.yaml), which also targets Service orders and takes precedence; this policy is ignored
examples/invalid/policies.yaml: AccessPolicy shop/payments: spec.targetRef.name: target Service shop/payments not found
examples/invalid/policies.yaml: AccessPolicy shop/payments: spec.mtls.mode: must be one of STRICT, PERMISSIVE, DISABLE; got "strict" (did you mean "STRICT"?)
examples/invalid/routes.yaml: GRPCRoute shop/orders: spec.rules[0].matches[0].headers[0].value: must be a string, got boolean true (quote it: "true")
examples/invalid/routes.yaml: GRPCRoute shop/orders: spec.rules[0].backendRefs[0].name: backend Service shop/orders-v2 not found
examples/invalid/routes.yaml: GRPCRoute shop/orders: spec.rules[1].backendRefs[0].port: Service shop/orders has no port 8080 (ports: 50051)
examples/invalid/routes.yaml: GRPCRoute shop/orders: spec.rules[1].backendRefs[0].weight: must be an integer between 0 and 1000000, got -1
examples/invalid/routes.yaml: GRPCRoute shop/orders: spec.rules[1].timeout: unknown field (did you mean "timeouts"?)
examples/invalid/syntax-error.yaml: YAML syntax error at line 10, column 6: expected <block end>, but found '<block mapping start>' (while parsing a block collection at line 8)
"""  # noqa: E501


def test_invalid_example_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # sources as `meshctl check examples/invalid` prints them
    assert lines(check("examples/invalid")) == INVALID_EXPECTED.splitlines()
