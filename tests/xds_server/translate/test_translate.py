"""Table tests of translation: hand-built models in, xDS protos out."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from tests.xds_server.translate.model_builders import (
    backend,
    endpoint,
    endpoint_slice,
    grpc_route,
    header,
    http_route,
    match,
    mesh,
    policy,
    port,
    rule,
    service,
)
from tests.xds_server.translate.reference_check import hcm_of, missing_references
from xds_server.model import (
    CircuitBreaker,
    EndpointPort,
    FaultInjection,
    LoadBalancer,
    MeshConfig,
    OutlierDetection,
    RetryPolicy,
)
from xds_server.node import NodeGroup
from xds_server.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_server.translate import build_resources
from xds_server.translate.routes import MIN_RETRY_BACKOFF

GRPC = NodeGroup(kind="grpc")
ENVOY = NodeGroup(kind="envoy", outbound_port=15999)
FQDN = "reviews.default.svc.cluster.local"
RDS = f"{FQDN}:50051"
V1 = "outbound|50051||reviews-v1.default.svc.cluster.local"
V2 = "outbound|50051||reviews-v2.default.svc.cluster.local"
OWN = f"outbound|50051||{FQDN}"
Health = health_check_pb2.HealthStatus


def canary_model(*extra: object):  # type: ignore[no-untyped-def]
    reviews, v1, v2 = service("reviews"), service("reviews-v1"), service("reviews-v2")
    return mesh(
        reviews, v1, v2,
        endpoint_slice(v1, endpoint("10.0.0.1", zone="a"), endpoint("10.0.0.2", zone="b")),
        endpoint_slice(v2, endpoint("10.0.0.3", zone="a")),
        *extra,
    )


def routes_of(resources, name: str = RDS):  # type: ignore[no-untyped-def]
    (vhost,) = resources[ROUTE][name].virtual_hosts
    return list(vhost.routes)


# ------------------------------------------------------------------------ listeners


@pytest.mark.parametrize(("group_ns", "expected"), [
    ("default", {RDS, FQDN, "reviews.default:50051", "reviews.default", "reviews:50051",
                 "reviews"}),
    ("other", {RDS, FQDN, "reviews.default:50051", "reviews.default"}),
])
def test_api_listener_names_per_namespace(group_ns, expected):
    out = build_resources(mesh(service("reviews")), NodeGroup(kind="grpc", namespace=group_ns))
    api = {n for n, lst in out[LISTENER].items() if lst.HasField("api_listener")}
    assert api == expected


def test_port_less_names_only_for_the_default_port():
    svc = service("reviews", port(8080, "http", "http"), port(50051, "grpc", "grpc"))
    out = build_resources(mesh(svc), GRPC)
    api = {n for n, lst in out[LISTENER].items() if lst.HasField("api_listener")}
    assert f"{FQDN}:8080" in api and "reviews:8080" in api
    assert hcm_of(out[LISTENER]["reviews"]).rds.route_config_name == RDS  # grpc port wins


def test_api_listener_uses_rds_and_fault_then_router_with_typed_config():
    out = build_resources(mesh(service("reviews")), GRPC)
    hcm = hcm_of(out[LISTENER]["reviews"])
    assert hcm.rds.route_config_name == RDS
    assert hcm.rds.config_source.HasField("ads")
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.fault",
                                                  "envoy.filters.http.router"]
    assert hcm.http_filters[1].typed_config.type_url.endswith("router.v3.Router")


def test_server_listeners_for_every_endpoint_and_any_address():
    svc = service("reviews")
    out = build_resources(
        mesh(svc, endpoint_slice(svc, endpoint("10.0.0.1"), endpoint("fd00::1"), port=8080)),
        GRPC,
    )
    prefix = "grpc/server?xds.resource.listening_address="
    names = {n.removeprefix(prefix) for n in out[LISTENER] if n.startswith(prefix)}
    assert names == {"10.0.0.1:8080", "[fd00::1]:8080", "0.0.0.0:8080", "[::]:8080"}
    listener = out[LISTENER][prefix + "0.0.0.0:8080"]
    assert listener.address.socket_address.port_value == 8080
    (route,) = hcm_of(listener).route_config.virtual_hosts[0].routes
    assert route.HasField("non_forwarding_action")


# --------------------------------------------------------------------------- routes


def test_no_route_attached_is_a_catch_all_to_the_own_cluster():
    (route,) = routes_of(build_resources(mesh(service("reviews")), GRPC))
    assert route.match.prefix == "" and route.route.cluster == OWN


def test_weighted_backends_and_header_rule():
    out = build_resources(canary_model(grpc_route(
        "reviews",
        rule(backend("reviews-v2", port=50051), matches=(match(None, header("x-canary", "true")),)),
        rule(backend("reviews-v1", 90, port=50051), backend("reviews-v2", 10, port=50051)),
    )), GRPC)
    first, second = routes_of(out)
    assert first.match.headers[0].name == "x-canary"
    assert first.match.headers[0].string_match.exact == "true"
    assert first.route.cluster == V2
    weights = {c.name: c.weight.value for c in second.route.weighted_clusters.clusters}
    assert weights == {V1: 90, V2: 10}


@pytest.mark.parametrize(("refs", "expect"), [
    ((backend("reviews-v1", 0, port=50051), backend("reviews-v2", 5, port=50051)), V2),
    ((backend("missing", 5, port=50051), backend("reviews-v2", 5, port=50051)), V2),
    ((backend("reviews-v1", 5, port=9999), backend("reviews-v2", 5, port=50051)), V2),
    ((backend("reviews-v1", 1),), V1),  # no port: the parent's
])
def test_unusable_backends_are_skipped(refs, expect):
    (route,) = routes_of(build_resources(canary_model(grpc_route("reviews", rule(*refs))), GRPC))
    assert route.route.cluster == expect


@pytest.mark.parametrize(("kind", "status"), [("GRPCRoute", 503), ("HTTPRoute", 500)])
def test_rule_without_backends_fails_calls(kind, status):
    build = grpc_route if kind == "GRPCRoute" else http_route
    (route,) = routes_of(build_resources(canary_model(build("reviews", rule())), GRPC))
    assert route.direct_response.status == status


def test_gateway_api_precedence():
    rules = [
        rule(backend("reviews-v1", port=50051)),                                   # catch-all
        rule(backend("reviews-v1", port=50051), matches=(match(("RegularExpression", "/x.*")),)),
        rule(backend("reviews-v1", port=50051), matches=(match(("PathPrefix", "/a/")),)),
        rule(backend("reviews-v1", port=50051), matches=(match(("PathPrefix", "/a/b/")),)),
        rule(backend("reviews-v1", port=50051),
             matches=(match(("PathPrefix", "/a/b/"), header("h", "1")),)),
        rule(backend("reviews-v1", port=50051), matches=(match(("Exact", "/a/b/c")),)),
    ]
    routes = routes_of(build_resources(canary_model(http_route("reviews", *rules)), GRPC))
    order = [(r.match.WhichOneof("path_specifier"), len(r.match.headers)) for r in routes]
    assert order == [("path", 0), ("safe_regex", 1), ("safe_regex", 0), ("safe_regex", 0),
                     ("safe_regex", 0), ("prefix", 0)]
    # Segment prefixes (a trailing "/" is ignored), longest first, then the user's regex.
    assert [r.match.safe_regex.regex for r in routes[1:5]] == [
        "/a/b(/.*)?", "/a/b(/.*)?", "/a(/.*)?", "/x.*"]
    assert routes[-1].match.prefix == ""


def test_http_route_method_query_and_segment_prefix():
    m = match(("PathPrefix", "/api"), method="GET", query=(header("v", "2"),))
    (route,) = routes_of(build_resources(
        canary_model(http_route("reviews", rule(backend("reviews-v1", port=50051), matches=(m,)))),
        GRPC))
    assert route.match.safe_regex.regex == "/api(/.*)?"
    assert [(h.name, h.string_match.exact) for h in route.match.headers] == [(":method", "GET")]
    assert route.match.query_parameters[0].string_match.exact == "2"


def test_parent_port_filters_attachment():
    svc = service("reviews", port(50051), port(50052, "grpc-admin"))
    model = mesh(svc, service("reviews-v1"),
                 grpc_route("reviews", rule(backend("reviews-v1", port=50051)), parent_port=50051))
    out = build_resources(model, GRPC)
    assert routes_of(out)[0].route.cluster == V1
    assert routes_of(out, f"{FQDN}:50052")[0].route.cluster == f"outbound|50052||{FQDN}"


@pytest.mark.parametrize(("rule_timeout", "policy_timeout", "expect"), [
    (None, None, 0.0), (None, 2.0, 2.0), (0.5, 2.0, 0.5),
])
def test_timeouts(rule_timeout, policy_timeout, expect):
    model = canary_model(
        http_route("reviews", rule(backend("reviews-v1", port=50051), timeout=rule_timeout)),
        policy("reviews", timeout=policy_timeout),
    )
    (route,) = routes_of(build_resources(model, GRPC))
    assert route.route.timeout.ToTimedelta().total_seconds() == expect
    if expect:
        stream = route.route.max_stream_duration
        assert stream.max_stream_duration.ToTimedelta().total_seconds() == expect
        assert stream.grpc_timeout_header_max.ToTimedelta().total_seconds() == expect


def test_retry_policy():
    retries = RetryPolicy(attempts=4, per_try_timeout=0.2,
                          retry_on=("UNAVAILABLE", "RESOURCE_EXHAUSTED"),
                          base_interval=0.01, max_interval=0.1)
    (route,) = routes_of(build_resources(
        mesh(service("reviews"), policy("reviews", retries=retries)), GRPC))
    retry = route.route.retry_policy
    assert retry.retry_on == "unavailable,resource-exhausted"
    assert retry.num_retries.value == 3
    assert retry.per_try_timeout.ToTimedelta().total_seconds() == 0.2
    assert retry.retry_back_off.base_interval.ToTimedelta().total_seconds() == 0.01
    assert retry.retry_back_off.max_interval.ToTimedelta().total_seconds() == 0.1


def test_retry_backoff_has_a_floor():
    # grpcio 1.85 leaves retries pending until the deadline with a ~1 ms backoff.
    retries = RetryPolicy(attempts=2, base_interval=0.001, max_interval=0.002)
    (route,) = routes_of(build_resources(
        mesh(service("reviews"), policy("reviews", retries=retries)), GRPC))
    back_off = route.route.retry_policy.retry_back_off
    assert back_off.base_interval.ToTimedelta().total_seconds() == MIN_RETRY_BACKOFF
    assert back_off.max_interval.ToTimedelta().total_seconds() == MIN_RETRY_BACKOFF


def test_ring_hash_header_hash_policy():
    lb = LoadBalancer(type="RING_HASH", hash_header="x-user")
    out = build_resources(mesh(service("reviews"), policy("reviews", load_balancer=lb)), GRPC)
    (route,) = routes_of(out)
    assert route.route.hash_policy[0].header.header_name == "x-user"
    assert out[CLUSTER][OWN].lb_policy == cluster_pb2.Cluster.RING_HASH


@pytest.mark.parametrize(("protocol", "field", "value"), [
    ("grpc", "grpc_status", 14), ("http", "http_status", 503),
])
def test_fault_injection(protocol, field, value):
    fault = FaultInjection(delay_percent=10, delay=0.1, abort_percent=5)
    svc = service("reviews", port(50051, protocol, protocol))
    (route,) = routes_of(build_resources(mesh(svc, policy("reviews", fault_injection=fault)),
                                         GRPC))
    config = fault_pb2.HTTPFault()
    route.typed_per_filter_config["envoy.filters.http.fault"].Unpack(config)
    assert config.delay.fixed_delay.ToTimedelta().total_seconds() == 0.1
    assert config.delay.percentage.numerator == 10
    assert getattr(config.abort, field) == value
    assert config.abort.percentage.numerator == 5


# ------------------------------------------------------------------------- clusters


@pytest.mark.parametrize(("lb", "expect"), [
    (None, cluster_pb2.Cluster.ROUND_ROBIN),
    (LoadBalancer(type="ROUND_ROBIN"), cluster_pb2.Cluster.ROUND_ROBIN),
    (LoadBalancer(type="LEAST_REQUEST", choice_count=3), cluster_pb2.Cluster.LEAST_REQUEST),
    (LoadBalancer(type="RING_HASH", hash_header="h", minimum_ring_size=64),
     cluster_pb2.Cluster.RING_HASH),
])
def test_cluster_lb_policy(lb, expect):
    extra = (policy("reviews", load_balancer=lb),) if lb else ()
    cluster = build_resources(mesh(service("reviews"), *extra), GRPC)[CLUSTER][OWN]
    assert cluster.lb_policy == expect
    assert cluster.type == cluster_pb2.Cluster.EDS
    assert cluster.eds_cluster_config.service_name == OWN
    assert cluster.eds_cluster_config.eds_config.HasField("ads")
    if lb and lb.type == "LEAST_REQUEST":
        assert cluster.least_request_lb_config.choice_count.value == 3
        names = [p.typed_extension_config.name for p in cluster.load_balancing_policy.policies]
        assert names[-1] == "envoy.load_balancing_policies.round_robin"  # gRPC's fallback
    if lb and lb.type == "RING_HASH":
        assert cluster.ring_hash_lb_config.minimum_ring_size.value == 64


def test_circuit_breaker_and_outlier_detection():
    pol = policy("reviews", circuit_breaker=CircuitBreaker(max_concurrent_requests=7),
                 outlier_detection=OutlierDetection(consecutive_failures=3,
                                                    max_ejection_percent=50))
    cluster = build_resources(mesh(service("reviews"), pol), GRPC)[CLUSTER][OWN]
    assert cluster.circuit_breakers.thresholds[0].max_requests.value == 7
    od = cluster.outlier_detection
    assert od.consecutive_5xx.value == 3 and od.max_ejection_percent.value == 50
    assert not od.HasField("failure_percentage_threshold")
    assert od.enforcing_success_rate.value == 0


def test_outlier_failure_percentage_only_when_set():
    od = OutlierDetection(failure_percentage_threshold=40, failure_percentage_request_volume=10)
    cluster = build_resources(mesh(service("reviews"), policy("reviews", outlier_detection=od)),
                              GRPC)[CLUSTER][OWN]
    assert cluster.outlier_detection.failure_percentage_threshold.value == 40
    assert cluster.outlier_detection.failure_percentage_request_volume.value == 10
    assert cluster.outlier_detection.enforcing_failure_percentage.value == 100


@pytest.mark.parametrize(("protocol", "http2"), [("grpc", True), ("http2", True),
                                                 ("http", False), ("tcp", False)])
def test_http2_options_only_for_grpc_and_http2(protocol, http2):
    svc = service("reviews", port(50051, protocol, protocol))
    cluster = build_resources(mesh(svc), GRPC)[CLUSTER][OWN]
    key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    assert (key in cluster.typed_extension_protocol_options) is http2


# ------------------------------------------------------------------------ endpoints


def test_localities_weights_health_and_port_linking():
    v1 = service("reviews-v1")
    model = mesh(v1, endpoint_slice(
        v1,
        endpoint("10.0.0.1", zone="a"),
        endpoint("10.0.0.2", "10.0.0.3", zone="a"),
        endpoint("10.0.0.4", zone="b", ready=False, serving=True, terminating=True),
        endpoint("10.0.0.5", zone="b", ready=False, serving=False),
        endpoint("10.0.0.1", zone="a"),  # a duplicate address: counted once
        port=8080,
    ), endpoint_slice(v1, endpoint("10.9.9.9"), port_name="other", port=9999, name="x"))
    cla = build_resources(model, GRPC)[ENDPOINT][V1]
    by_zone = {loc.locality.zone: loc for loc in cla.endpoints}
    assert set(by_zone) == {"a", "b"}  # the slice whose port name matches nothing is ignored
    assert by_zone["a"].load_balancing_weight.value == 3
    assert by_zone["b"].load_balancing_weight.value == 2
    health = {e.endpoint.address.socket_address.address: e.health_status
              for loc in cla.endpoints for e in loc.lb_endpoints}
    assert health == {"10.0.0.1": Health.HEALTHY, "10.0.0.2": Health.HEALTHY,
                      "10.0.0.3": Health.HEALTHY, "10.0.0.4": Health.DRAINING,
                      "10.0.0.5": Health.UNHEALTHY}
    assert {e.endpoint.address.socket_address.port_value
            for loc in cla.endpoints for e in loc.lb_endpoints} == {8080}


def test_unnamed_ports_link_and_empty_assignments_exist():
    svc = service("solo", port(80, "", "http"))
    other = service("empty")
    model = mesh(svc, other, endpoint_slice(svc, endpoint("10.0.0.1"),
                                            ports=(EndpointPort(name="", port=8080),)))
    out = build_resources(model, GRPC)
    cla = out[ENDPOINT]["outbound|80||solo.default.svc.cluster.local"]
    assert cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value == 8080
    assert list(out[ENDPOINT]["outbound|50051||empty.default.svc.cluster.local"].endpoints) == []


# ---------------------------------------------------------------------------- Envoy


def test_envoy_output():
    out = build_resources(canary_model(), ENVOY)
    (listener,) = out[LISTENER].values()
    assert listener.name == "outbound"
    assert listener.address.socket_address.port_value == 15999
    hcm = hcm_of(listener)
    assert hcm.codec_type == hcm_pb2.HttpConnectionManager.AUTO
    assert hcm.rds.route_config_name == "outbound"
    (table,) = out[ROUTE].values()
    assert len(table.virtual_hosts) == 3
    domains = {d for vhost in table.virtual_hosts for d in vhost.domains}
    assert {RDS, "reviews", "reviews-v1.default:50051"} <= domains
    default_port = build_resources(canary_model(), NodeGroup(kind="envoy"))
    port_value = default_port[LISTENER]["outbound"].address.socket_address.port_value
    assert port_value == MeshConfig().sidecar_outbound_port


# ----------------------------------------------------------------- purity, references


@pytest.mark.parametrize("group", [GRPC, ENVOY, NodeGroup(kind="meshlib", namespace="x")],
                         ids=lambda g: g.key)
def test_deterministic_and_consistent(group):
    def build():  # type: ignore[no-untyped-def]
        return build_resources(canary_model(
            grpc_route("reviews", rule(backend("reviews-v1", 3, port=50051),
                                       backend("reviews-v2", 1, port=50051))),
            policy("reviews", retries=RetryPolicy(), timeout=1.0)), group)

    a, b = build(), build()
    serialized = {t: {n: m.SerializeToString(deterministic=True) for n, m in r.items()}
                  for t, r in a.items()}
    assert serialized == {t: {n: m.SerializeToString(deterministic=True) for n, m in r.items()}
                          for t, r in b.items()}
    assert set(a) == {LISTENER, ROUTE, CLUSTER, ENDPOINT}
    assert missing_references(a) == {}


def test_backend_ring_hash_header_applies_behind_a_route():
    lb = LoadBalancer(type="RING_HASH", hash_header="x-session")
    out = build_resources(canary_model(
        grpc_route("reviews", rule(backend("reviews-v1", port=50051))),
        policy("reviews-v1", load_balancer=lb)), GRPC)
    (route,) = routes_of(out)
    assert [h.header.header_name for h in route.route.hash_policy] == ["x-session"]
    assert out[CLUSTER][V1].lb_policy == cluster_pb2.Cluster.RING_HASH
