"""Table tests of the route-level TrafficPolicy parts: timeouts, retries, hash, faults.

Tests named ``test_bug_*`` fail on purpose: each pins a translation bug (see its
docstring) and passes once the bug is fixed.
"""

from __future__ import annotations

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from tests.xds_server.translate.model_builders import (
    backend,
    grpc_route,
    http_route,
    mesh,
    policy,
    port,
    rule,
    service,
)
from xds_server.model import FaultInjection, LoadBalancer, RetryPolicy
from xds_server.node import NodeGroup
from xds_server.resources import ROUTE
from xds_server.translate import build_resources

GRPC = NodeGroup(kind="grpc")
FQDN = "reviews.default.svc.cluster.local"
RDS = f"{FQDN}:50051"
FAULT = "envoy.filters.http.fault"
TO_V1 = backend("reviews-v1", port=50051)
FP = percent_pb2.FractionalPercent


def secs(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def mesh_of(*extra, reviews=None):
    """reviews (the parent) and reviews-v1 (a backend), plus ``extra``."""
    return mesh(reviews or service("reviews"), service("reviews-v1"), *extra)


def only_route(model):
    (vhost,) = build_resources(model, GRPC)[ROUTE][RDS].virtual_hosts
    (route,) = vhost.routes
    return route


# ----------------------------------------------------------------------------- timeouts


@pytest.mark.parametrize(("attached", "rule_timeout", "policy_timeout", "expected"), [
    (False, None, None, 0.0),
    (False, None, 3.0, 3.0),
    (True, None, None, 0.0),
    (True, None, 2.0, 2.0),
    (True, 0.5, 2.0, 0.5),      # the rule's timeouts.request wins
    (True, 0.5, None, 0.5),
    (True, 1.25, None, 1.25),
    (True, 0.0, 2.0, 0.0),      # "0s" switches the policy's timeout off
])
def test_timeouts(attached, rule_timeout, policy_timeout, expected):
    extra = [policy("reviews", timeout=policy_timeout)] if policy_timeout is not None else []
    if attached:
        extra.append(http_route("reviews", rule(TO_V1, timeout=rule_timeout)))
    action = only_route(mesh_of(*extra)).route
    assert action.timeout == secs(expected)
    if expected:
        assert action.max_stream_duration.max_stream_duration == secs(expected)
        assert action.max_stream_duration.grpc_timeout_header_max == secs(expected)
    else:
        assert not action.HasField("max_stream_duration")


@pytest.mark.parametrize(("rule_timeout", "backend_timeout", "retries"), [
    pytest.param(None, 1.0, None, id="no-policy"),
    pytest.param(5.0, 1.0, RetryPolicy(attempts=1), id="single-attempt-policy"),
])
def test_bug_backend_request_timeout_bounds_a_call_without_retries(rule_timeout,
                                                                  backend_timeout, retries):
    """BUG: HTTPRoute ``timeouts.backendRequest`` only becomes ``per_try_timeout`` of a
    retry policy, so with no (effective) retries it is silently dropped and the call is
    unbounded (timeout 0) or bounded only by ``timeouts.request``. With a single try the
    backend request *is* the call. Fix in routes._forward: when no retry policy results,
    use ``min(timeout, backend_request_timeout)`` (either may be unset) as the route
    timeout and max_stream_duration."""
    extra = [policy("reviews", retries=retries)] if retries is not None else []
    model = mesh_of(http_route("reviews", rule(TO_V1, timeout=rule_timeout,
                                               backend_request_timeout=backend_timeout)),
                    *extra)
    action = only_route(model).route
    assert 0 < action.timeout.ToTimedelta().total_seconds() <= backend_timeout
    stream = action.max_stream_duration.max_stream_duration
    assert 0 < stream.ToTimedelta().total_seconds() <= backend_timeout


# ------------------------------------------------------------------------------ retries


def retry(on: str, retries: int, base: float | None = 0.025, maximum: float = 0.25,
          per_try: float | None = None) -> rc_pb2.RetryPolicy:
    out = rc_pb2.RetryPolicy(retry_on=on, num_retries=wrappers_pb2.UInt32Value(value=retries))
    if base is not None:
        out.retry_back_off.base_interval.CopyFrom(secs(base))
        out.retry_back_off.max_interval.CopyFrom(secs(maximum))
    if per_try is not None:
        out.per_try_timeout.CopyFrom(secs(per_try))
    return out


ALL_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED", "INTERNAL")


@pytest.mark.parametrize(("retries", "backend_timeout", "expected"), [
    pytest.param(RetryPolicy(), None, retry("unavailable", 2), id="defaults"),
    pytest.param(RetryPolicy(attempts=5, retry_on=ALL_CODES), None,
                 retry("unavailable,deadline-exceeded,resource-exhausted,cancelled,internal", 4),
                 id="all-codes"),
    pytest.param(RetryPolicy(attempts=2, retry_on=("unavailable",)), None,
                 retry("unavailable", 1), id="lower-case-names"),
    pytest.param(RetryPolicy(attempts=1), None, None, id="one-attempt-no-retries"),
    pytest.param(RetryPolicy(retry_on=()), None, None, id="nothing-to-retry-on"),
    pytest.param(RetryPolicy(per_try_timeout=0.2), None, retry("unavailable", 2, per_try=0.2),
                 id="per-try"),
    pytest.param(RetryPolicy(), 0.3, retry("unavailable", 2, per_try=0.3),
                 id="backend-request-timeout-is-per-try"),
    pytest.param(RetryPolicy(per_try_timeout=0.2), 0.3, retry("unavailable", 2, per_try=0.2),
                 id="policy-per-try-wins"),
    pytest.param(RetryPolicy(base_interval=0.0), None, retry("unavailable", 2, base=None),
                 id="no-backoff"),
    pytest.param(RetryPolicy(base_interval=0.1, max_interval=1.5), None,
                 retry("unavailable", 2, 0.1, 1.5), id="backoff"),
    pytest.param(RetryPolicy(base_interval=0.001, max_interval=0.002), None,
                 retry("unavailable", 2, 0.005, 0.005), id="backoff-floor"),
    pytest.param(RetryPolicy(base_interval=0.1, max_interval=0.05), None,
                 retry("unavailable", 2, 0.1, 0.1), id="max-at-least-base"),
])
def test_retry_policy(retries, backend_timeout, expected):
    model = mesh_of(policy("reviews", retries=retries),
                    http_route("reviews", rule(TO_V1, backend_request_timeout=backend_timeout)))
    action = only_route(model).route
    if expected is None:
        assert not action.HasField("retry_policy")
    else:
        assert action.retry_policy == expected


def test_retry_policy_on_the_catch_all_route():
    action = only_route(mesh_of(policy("reviews", retries=RetryPolicy(attempts=3)))).route
    assert action.retry_policy == retry("unavailable", 2)


# ---------------------------------------------------------------------------- hash policy


def header_hashes(*names: str) -> list[rc_pb2.RouteAction.HashPolicy]:
    return [rc_pb2.RouteAction.HashPolicy(header=rc_pb2.RouteAction.HashPolicy.Header(
        header_name=name)) for name in names]


@pytest.mark.parametrize(("lb", "expected"), [
    (LoadBalancer(type="RING_HASH", hash_header="x-user"), ["x-user"]),
    (LoadBalancer(type="RING_HASH"), []),
    (LoadBalancer(type="ROUND_ROBIN", hash_header="x-user"), []),
    (LoadBalancer(type="LEAST_REQUEST", hash_header="x-user"), []),
    (None, []),
])
@pytest.mark.parametrize("attached", [False, True], ids=["catch-all", "attached"])
def test_ring_hash_header_hash_policy(lb, expected, attached):
    extra = [http_route("reviews", rule(TO_V1))] if attached else []
    action = only_route(mesh_of(policy("reviews", load_balancer=lb), *extra)).route
    assert list(action.hash_policy) == header_hashes(*expected)


def ring(header: str) -> LoadBalancer:
    return LoadBalancer(type="RING_HASH", hash_header=header)


TO_V2 = backend("reviews-v2", port=50051)


@pytest.mark.parametrize(("policies", "backends", "expected"), [
    pytest.param({"reviews-v1": ring("x-v1")}, (TO_V1,), ["x-v1"], id="backend-ring-hash"),
    pytest.param({"reviews": ring("x-user"), "reviews-v1": ring("x-v1")}, (TO_V1,),
                 ["x-user", "x-v1"], id="parent-first-then-backend"),
    pytest.param({"reviews": ring("x-user"), "reviews-v1": ring("x-user")}, (TO_V1,),
                 ["x-user"], id="same-header-once"),
    pytest.param({"reviews-v1": ring("x-v1"), "reviews-v2": ring("x-v2")},
                 (backend("reviews-v2", 1, port=50051), backend("reviews-v1", 1, port=50051)),
                 ["x-v2", "x-v1"], id="backends-in-order"),
    pytest.param({"reviews-v1": LoadBalancer(type="ROUND_ROBIN", hash_header="x")}, (TO_V1,),
                 [], id="backend-not-ring-hash"),
    pytest.param({"reviews-v1": LoadBalancer(type="RING_HASH")}, (TO_V1,), [],
                 id="backend-ring-hash-without-header"),
    pytest.param({"reviews-v2": ring("x-v2")}, (TO_V1,), [], id="policy-of-another-service"),
    pytest.param({}, (TO_V1, backend("missing", port=50051)), [], id="missing-backend"),
])
def test_backend_ring_hash_headers(policies, backends, expected):
    model = mesh_of(service("reviews-v2"), http_route("reviews", rule(*backends)),
                    *(policy(name, load_balancer=lb) for name, lb in policies.items()))
    assert list(only_route(model).route.hash_policy) == header_hashes(*expected)


def test_catch_all_hashes_on_the_parents_header_only():
    model = mesh_of(policy("reviews", load_balancer=ring("x-user")),
                    policy("reviews-v1", load_balancer=ring("x-v1")))
    assert list(only_route(model).route.hash_policy) == header_hashes("x-user")


# ------------------------------------------------------------------------ fault injection


def fault(*, delay: float | None = None, delay_pct: FP | None = None, grpc: int | None = None,
          http: int | None = None, abort_pct: FP | None = None) -> fault_pb2.HTTPFault:
    out = fault_pb2.HTTPFault()
    if delay is not None:
        out.delay.fixed_delay.CopyFrom(secs(delay))
        out.delay.percentage.CopyFrom(delay_pct)
    if grpc is not None:
        out.abort.grpc_status = grpc
    if http is not None:
        out.abort.http_status = http
    if abort_pct is not None:
        out.abort.percentage.CopyFrom(abort_pct)
    return out


def pct(numerator: int, denominator: int = FP.HUNDRED) -> FP:
    return FP(numerator=numerator, denominator=denominator)


@pytest.mark.parametrize(("protocol", "kind", "injection", "expected"), [
    pytest.param("grpc", None, FaultInjection(delay_percent=10, delay=0.1),
                 fault(delay=0.1, delay_pct=pct(10)), id="delay"),
    pytest.param("grpc", None, FaultInjection(delay_percent=0.5, delay=2),
                 fault(delay=2, delay_pct=pct(5000, FP.MILLION)), id="fractional-delay-percent"),
    pytest.param("grpc", None, FaultInjection(delay_percent=10, delay=0), None,
                 id="delay-percent-without-delay"),
    pytest.param("grpc", None, FaultInjection(delay_percent=0, delay=1), None,
                 id="delay-without-percent"),
    pytest.param("grpc", None, FaultInjection(abort_percent=5),
                 fault(grpc=14, abort_pct=pct(5)), id="abort-grpc-default-unavailable"),
    pytest.param("grpc", None, FaultInjection(abort_percent=100,
                                              abort_grpc_status="resource_exhausted"),
                 fault(grpc=8, abort_pct=pct(100)), id="abort-grpc-named-status"),
    pytest.param("http", None, FaultInjection(abort_percent=5),
                 fault(http=503, abort_pct=pct(5)), id="abort-http-default"),
    pytest.param("http", None, FaultInjection(abort_percent=5, abort_http_status=429),
                 fault(http=429, abort_pct=pct(5)), id="abort-http-status"),
    pytest.param("http2", None, FaultInjection(abort_percent=5),
                 fault(http=503, abort_pct=pct(5)), id="abort-http2-port-is-http"),
    pytest.param("http", "GRPCRoute", FaultInjection(abort_percent=5),
                 fault(grpc=14, abort_pct=pct(5)), id="grpcroute-on-http-port-is-grpc"),
    pytest.param("grpc", "HTTPRoute", FaultInjection(abort_percent=5),
                 fault(grpc=14, abort_pct=pct(5)), id="httproute-on-grpc-port-is-grpc"),
    pytest.param("http", "HTTPRoute", FaultInjection(abort_percent=5),
                 fault(http=503, abort_pct=pct(5)), id="httproute-on-http-port-is-http"),
    pytest.param("grpc", None, FaultInjection(delay_percent=50, delay=0.25, abort_percent=0.25),
                 fault(delay=0.25, delay_pct=pct(50), grpc=14,
                       abort_pct=pct(2500, FP.MILLION)), id="delay-and-abort"),
    pytest.param("grpc", None, FaultInjection(), None, id="all-zero"),
])
def test_fault_injection(protocol, kind, injection, expected):
    reviews = service("reviews", port(50051, protocol, protocol))
    extra = []
    if kind is not None:
        build = grpc_route if kind == "GRPCRoute" else http_route
        extra.append(build("reviews", rule(backend("reviews", port=50051))))
    route = only_route(mesh_of(policy("reviews", fault_injection=injection), *extra,
                               reviews=reviews))
    if expected is None:
        assert not route.typed_per_filter_config
    else:
        assert list(route.typed_per_filter_config) == [FAULT]
        config = fault_pb2.HTTPFault()
        assert route.typed_per_filter_config[FAULT].Unpack(config)
        assert config == expected


def test_policy_of_another_namespace_does_not_apply():
    other = policy("reviews", namespace="shop", timeout=9.0,
                   fault_injection=FaultInjection(abort_percent=5))
    route = only_route(mesh_of(other))
    assert route.route.timeout == secs(0)
    assert not route.typed_per_filter_config
