"""Table tests of RouteConfiguration translation: GAMMA GRPCRoute/HTTPRoute → xDS routes.

Matches, backends, Gateway API precedence and parentRef attachment; the TrafficPolicy
parts of a route are in ``test_table_route_policies.py``.

Tests named ``test_bug_*`` fail on purpose: each pins a translation bug (see its
docstring) and passes once the bug is fixed.
"""

from __future__ import annotations

import re

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import duration_pb2

from tests.xds_server.translate.model_builders import (
    backend,
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
from xds_server.model import (
    FaultInjection,
    MeshConfig,
    ParentRef,
    RetryPolicy,
    Route,
)
from xds_server.node import NodeGroup
from xds_server.resources import ROUTE
from xds_server.translate import build_resources, listener_names

GRPC = NodeGroup(kind="grpc")
FQDN = "reviews.default.svc.cluster.local"
RDS = f"{FQDN}:50051"
OWN = f"outbound|50051||{FQDN}"
V1 = "outbound|50051||reviews-v1.default.svc.cluster.local"
V2 = "outbound|50051||reviews-v2.default.svc.cluster.local"
RATINGS = "outbound|9090||ratings.shop.svc.cluster.local"
TO_V1 = backend("reviews-v1", port=50051)


def secs(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def mesh_of(*extra, reviews=None):
    """reviews (the parent), reviews-v1/-v2 (backends) and ratings.shop:9090, plus ``extra``."""
    return mesh(reviews or service("reviews"), service("reviews-v1"), service("reviews-v2"),
                service("ratings", port(9090), namespace="shop"), *extra)


def routes_of(model, name=RDS, group=GRPC):
    (vhost,) = build_resources(model, group)[ROUTE][name].virtual_hosts
    return list(vhost.routes)


def only_route(model):
    (route,) = routes_of(model)
    return route


# ------------------------------------------------------------------ route configurations


def test_one_route_configuration_per_service_port_with_one_virtual_host():
    reviews = service("reviews", port(50051), port(8080, "http", "http"))
    configs = build_resources(mesh(reviews), NodeGroup(kind="grpc", namespace="shop"))[ROUTE]
    assert set(configs) == {f"{FQDN}:50051", f"{FQDN}:8080"}
    for number in (50051, 8080):
        config = configs[f"{FQDN}:{number}"]
        assert config.name == f"{FQDN}:{number}"
        (vhost,) = config.virtual_hosts
        assert vhost.name == config.name
        # gRPC picks the virtual host by the target, i.e. the Listener name.
        assert tuple(vhost.domains) == listener_names(reviews, number, "shop")


def test_catch_all_when_no_route_is_attached():
    route = only_route(mesh(service("reviews")))
    assert route.name == "default"
    assert route.match == rc_pb2.RouteMatch(prefix="")
    assert route.route.cluster == OWN
    assert route.route.timeout == secs(0)  # Envoy's 15 s default switched off
    assert not route.route.HasField("retry_policy")
    assert not route.route.HasField("max_stream_duration")
    assert not route.typed_per_filter_config


# ------------------------------------------------------------------------------ matches


def exact(value: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(exact=value)


def regex(value: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=value))


def hdr(name: str, matcher: string_pb2.StringMatcher) -> rc_pb2.HeaderMatcher:
    return rc_pb2.HeaderMatcher(name=name, string_match=matcher)


@pytest.mark.parametrize(("kind", "model_match", "expected"), [
    pytest.param("GRPCRoute", match(), rc_pb2.RouteMatch(prefix=""), id="no-path"),
    pytest.param("GRPCRoute", match(("Exact", "/pkg.Svc/Get")),
                 rc_pb2.RouteMatch(path="/pkg.Svc/Get"), id="grpc-service-and-method"),
    pytest.param("GRPCRoute", match(("PathPrefix", "/pkg.Svc/")),
                 rc_pb2.RouteMatch(prefix="/pkg.Svc/"), id="grpc-service-only"),
    pytest.param("GRPCRoute", match(("RegularExpression", "/[^/]+/Get")),
                 rc_pb2.RouteMatch(safe_regex=regex_pb2.RegexMatcher(regex="/[^/]+/Get")),
                 id="grpc-method-only"),
    pytest.param("GRPCRoute", match(None, header("x-canary", "true")),
                 rc_pb2.RouteMatch(prefix="", headers=[hdr("x-canary", exact("true"))]),
                 id="header-exact"),
    pytest.param("GRPCRoute", match(None, header("x-user", "a.*", "RegularExpression")),
                 rc_pb2.RouteMatch(prefix="", headers=[hdr("x-user", regex("a.*"))]),
                 id="header-regex"),
    pytest.param("GRPCRoute", match(("Exact", "/p.S/M"), header("b", "2"), header("a", "1")),
                 rc_pb2.RouteMatch(path="/p.S/M", headers=[hdr("b", exact("2")),
                                                          hdr("a", exact("1"))]),
                 id="path-and-headers-in-order"),
    pytest.param("HTTPRoute", match(("PathPrefix", "/")), rc_pb2.RouteMatch(prefix=""),
                 id="root-prefix"),
    pytest.param("HTTPRoute", match(("PathPrefix", "/api/")),
                 rc_pb2.RouteMatch(safe_regex=regex_pb2.RegexMatcher(regex="/api(/.*)?")),
                 id="prefix-ending-in-slash"),
    pytest.param("HTTPRoute", match(("PathPrefix", "/api")),
                 rc_pb2.RouteMatch(safe_regex=regex_pb2.RegexMatcher(regex="/api(/.*)?")),
                 id="prefix-whole-segments"),
    pytest.param("HTTPRoute", match(("PathPrefix", "/v1.0+x")),
                 rc_pb2.RouteMatch(safe_regex=regex_pb2.RegexMatcher(regex=r"/v1\.0\+x(/.*)?")),
                 id="prefix-re2-escaped"),
    pytest.param("HTTPRoute", match(("Exact", "/healthz"), method="GET"),
                 rc_pb2.RouteMatch(path="/healthz", headers=[hdr(":method", exact("GET"))]),
                 id="method"),
    pytest.param("HTTPRoute", match(None, header("x", "1"), method="POST"),
                 rc_pb2.RouteMatch(prefix="", headers=[hdr("x", exact("1")),
                                                       hdr(":method", exact("POST"))]),
                 id="headers-then-method"),
    pytest.param("HTTPRoute", match(None, query=(header("v", "2"),
                                                 header("q", "[a-z]+", "RegularExpression"))),
                 rc_pb2.RouteMatch(prefix="", query_parameters=[
                     rc_pb2.QueryParameterMatcher(name="v", string_match=exact("2")),
                     rc_pb2.QueryParameterMatcher(name="q", string_match=regex("[a-z]+")),
                 ]), id="query-params"),
])
def test_match_translation(kind, model_match, expected):
    build = grpc_route if kind == "GRPCRoute" else http_route
    route = only_route(mesh_of(build("reviews", rule(TO_V1, matches=(model_match,)))))
    assert route.match == expected


def accepts(route_match: rc_pb2.RouteMatch, path: str) -> bool:
    """Whether an xDS path matcher accepts ``path`` (Python ``re`` ≈ RE2 for these)."""
    which = route_match.WhichOneof("path_specifier")
    if which == "prefix":
        return path.startswith(route_match.prefix)
    if which == "path":
        return path == route_match.path
    return re.fullmatch(route_match.safe_regex.regex, path) is not None


def path_match_of(path_type: str, value: str) -> rc_pb2.RouteMatch:
    model = mesh_of(http_route("reviews", rule(TO_V1, matches=(match((path_type, value)),))))
    return only_route(model).match


@pytest.mark.parametrize(("path_type", "value", "path", "accepted"), [
    ("PathPrefix", "/api", "/api", True),
    ("PathPrefix", "/api", "/api/", True),
    ("PathPrefix", "/api", "/api/v1/x", True),
    ("PathPrefix", "/api", "/apiv1", False),
    ("PathPrefix", "/api", "/", False),
    ("PathPrefix", "/api/", "/api/v1", True),
    ("PathPrefix", "/api/", "/apiv1", False),
    ("PathPrefix", "/v1.0", "/v1.0/x", True),
    ("PathPrefix", "/v1.0", "/v1x0/x", False),   # "." is literal
    ("PathPrefix", "/a+b", "/a+b", True),
    ("PathPrefix", "/a+b", "/aab", False),       # "+" is literal
    ("PathPrefix", "/", "/anything/at/all", True),
    ("Exact", "/a/b", "/a/b", True),
    ("Exact", "/a/b", "/a/b/", False),
    ("Exact", "/a/b", "/a", False),
    ("RegularExpression", "/[^/]+/Get", "/pkg.Svc/Get", True),
    ("RegularExpression", "/[^/]+/Get", "/pkg.Svc/GetAll", False),
])
def test_path_match_semantics(path_type, value, path, accepted):
    assert accepts(path_match_of(path_type, value), path) is accepted


def test_bug_path_prefix_trailing_slash_is_ignored():
    """BUG: Gateway API PathPrefix says "When specified, a trailing `/` is ignored", so
    prefix ``/api/`` must match ``/api`` as well. routes._match emits ``prefix: "/api/"``,
    which does not. Fix: strip one trailing ``/`` (unless the value is ``/``) before
    choosing the matcher, as Istio does, and rank by the stripped length."""
    assert accepts(path_match_of("PathPrefix", "/api/"), "/api")


# ----------------------------------------------------------------------------- backends


@pytest.mark.parametrize(("refs", "expected"), [
    pytest.param((TO_V1,), V1, id="one"),
    pytest.param((backend("reviews-v1", 90, port=50051), backend("reviews-v2", 10, port=50051)),
                 [(V1, 90), (V2, 10)], id="weighted"),
    pytest.param((backend("reviews-v2", 10, port=50051), backend("reviews-v1", 90, port=50051)),
                 [(V2, 10), (V1, 90)], id="weighted-keeps-order"),
    pytest.param((backend("reviews-v1", 0, port=50051), backend("reviews-v2", 5, port=50051)),
                 V2, id="zero-weight-dropped"),
    pytest.param((backend("reviews-v1", 2, port=50051), backend("reviews-v1", 3, port=50051),
                  backend("reviews-v2", 5, port=50051)),
                 [(V1, 5), (V2, 5)], id="same-backend-weights-summed"),
    pytest.param((backend("reviews-v1", 2, port=50051), backend("reviews-v1", 3, port=50051)),
                 V1, id="same-backend-only"),
    pytest.param((backend("missing", 5, port=50051), backend("reviews-v2", 5, port=50051)),
                 V2, id="missing-service-skipped"),
    pytest.param((backend("reviews-v1", 5, port=9999), backend("reviews-v2", 5, port=50051)),
                 V2, id="missing-port-skipped"),
    pytest.param((backend("reviews-v1"),), V1, id="no-port-means-parent-port"),
    pytest.param((backend("ratings", namespace="shop", port=9090),), RATINGS,
                 id="other-namespace"),
    pytest.param((backend("ratings", port=9090),), 503, id="wrong-namespace-is-missing"),
    pytest.param((backend("ratings", namespace="shop"),), 503, id="parent-port-not-on-backend"),
    pytest.param((backend("reviews-v1", 0, port=50051),), 503, id="all-zero"),
    pytest.param((backend("missing", port=50051),), 503, id="all-missing"),
    pytest.param((), 503, id="no-backends"),
])
def test_backends(refs, expected):
    model = mesh_of(grpc_route("reviews", rule(*refs)),
                    policy("reviews", timeout=1.0, retries=RetryPolicy(),
                           fault_injection=FaultInjection(abort_percent=1)))
    route = only_route(model)
    if isinstance(expected, int):
        assert route.WhichOneof("action") == "direct_response"
        assert route.direct_response.status == expected
        assert not route.typed_per_filter_config  # no policy on a local answer
    elif isinstance(expected, str):
        assert route.route.cluster == expected
        assert not route.route.HasField("weighted_clusters")
    else:
        assert route.route.WhichOneof("cluster_specifier") == "weighted_clusters"
        clusters = route.route.weighted_clusters.clusters
        assert [(c.name, c.weight.value) for c in clusters] == expected


@pytest.mark.parametrize(("build", "status"), [(grpc_route, 503), (http_route, 500)])
def test_no_usable_backend_answers_locally(build, status):
    route = only_route(mesh_of(build("reviews", rule(backend("missing", port=50051)))))
    assert route.direct_response == rc_pb2.DirectResponseAction(status=status)


# --------------------------------------------------------------------------- precedence


def r(*matches):
    return rule(TO_V1, matches=matches)


PREFIX_A = ("PathPrefix", "/a")
H1, H2 = header("h1", "1"), header("h2", "2")
Q1, Q2 = header("q1", "1"), header("q2", "2")


@pytest.mark.parametrize(("routes", "expected"), [
    pytest.param([http_route("reviews", r(match(("PathPrefix", "/a/b/c"))),
                             r(match(("Exact", "/a/b/c"))))],
                 ["1/0", "0/0"], id="exact-before-prefix"),
    pytest.param([http_route("reviews", r(match(("PathPrefix", "/a/b/c/d"))),
                             r(match(("Exact", "/a"))))],
                 ["1/0", "0/0"], id="exact-before-longer-prefix"),
    pytest.param([http_route("reviews", r(match(("PathPrefix", "/a"))),
                             r(match(("PathPrefix", "/a/b"))))],
                 ["1/0", "0/0"], id="longest-prefix-first"),
    pytest.param([http_route("reviews", r(match(("RegularExpression", "/a/.*"))),
                             r(match(("PathPrefix", "/a"))))],
                 ["1/0", "0/0"], id="prefix-before-regex"),
    pytest.param([http_route("reviews", r(), r(match(("RegularExpression", "/x.*"))))],
                 ["1/0", "0/0"], id="regex-before-catch-all"),
    pytest.param([http_route("reviews", r(match(("PathPrefix", "/"))),
                             r(match(("RegularExpression", "/x.*"))))],
                 ["1/0", "0/0"], id="regex-before-root-prefix"),
    pytest.param([http_route("reviews", r(match(PREFIX_A, H1, H2)),
                             r(match(("PathPrefix", "/a/b"))))],
                 ["1/0", "0/0"], id="path-before-headers"),
    pytest.param([http_route("reviews", r(match(PREFIX_A)), r(match(PREFIX_A, method="GET")))],
                 ["1/0", "0/0"], id="method-first"),
    pytest.param([http_route("reviews", r(match(PREFIX_A, H1, H2)),
                             r(match(PREFIX_A, method="GET")))],
                 ["1/0", "0/0"], id="method-before-headers"),
    pytest.param([http_route("reviews", r(match(PREFIX_A, H1)), r(match(PREFIX_A, H1, H2)))],
                 ["1/0", "0/0"], id="more-headers-first"),
    pytest.param([http_route("reviews", r(match(PREFIX_A, query=(Q1, Q2))),
                             r(match(PREFIX_A, H1)))],
                 ["1/0", "0/0"], id="headers-before-query"),
    pytest.param([http_route("reviews", r(match(PREFIX_A)), r(match(PREFIX_A, query=(Q1,))))],
                 ["1/0", "0/0"], id="more-query-first"),
    pytest.param([http_route("reviews", r(match(PREFIX_A)), r(match(PREFIX_A)))],
                 ["0/0", "1/0"], id="rule-order"),
    pytest.param([http_route("reviews", rule(TO_V1, matches=(match(PREFIX_A), match(PREFIX_A))))],
                 ["0/0", "0/1"], id="match-order"),
    pytest.param([grpc_route("reviews", r(match(None, H1)),
                             r(match(("RegularExpression", "/[^/]+/Get"))),
                             r(match(("PathPrefix", "/pkg.Svc/"))),
                             r(match(("Exact", "/pkg.Svc/Get"))))],
                 ["3/0", "2/0", "1/0", "0/0"], id="grpc-method-service-regex-header"),
])
def test_precedence_within_a_route(routes, expected):
    names = [x.name for x in routes_of(mesh_of(*routes))]
    assert names == [f"default/reviews/{suffix}" for suffix in expected]


@pytest.mark.parametrize(("routes", "expected"), [
    pytest.param([http_route("reviews", r(), name="b"), http_route("reviews", r(), name="a")],
                 ["default/a/0/0", "default/b/0/0"], id="route-name"),
    pytest.param([http_route("reviews", r(), name="a", namespace="zz", parent_namespace="default"),
                  http_route("reviews", r(), name="b", namespace="aa", parent_namespace="default")],
                 ["aa/b/0/0", "zz/a/0/0"], id="route-namespace-then-name"),
    pytest.param([http_route("reviews", r(match(PREFIX_A)), name="a"),
                  http_route("reviews", r(match(("Exact", "/a"))), name="b")],
                 ["default/b/0/0", "default/a/0/0"], id="path-before-route-name"),
    pytest.param([http_route("reviews", r(match(PREFIX_A)), r(), name="a"),
                  http_route("reviews", r(match(PREFIX_A, H1)), name="b")],
                 ["default/b/0/0", "default/a/0/0", "default/a/1/0"], id="interleaved"),
])
def test_precedence_across_routes(routes, expected):
    assert [x.name for x in routes_of(mesh_of(*routes))] == expected


# ------------------------------------------------------------------- parentRef / ports

TWO_PORTS = service("reviews", port(50051), port(50052, "grpc-admin"))


def attached_ports(*routes) -> set[int]:
    model = mesh_of(*routes, reviews=TWO_PORTS)
    return {number for number in (50051, 50052)
            if routes_of(model, f"{FQDN}:{number}")[0].name != "default"}


def with_parents(*parents: ParentRef) -> Route:
    return Route(kind="GRPCRoute", name="multi", namespace="default", parent_refs=parents,
                 rules=(rule(TO_V1),))


@pytest.mark.parametrize(("routes", "expected"), [
    pytest.param([grpc_route("reviews", rule(TO_V1))], {50051, 50052}, id="no-port-all-ports"),
    pytest.param([grpc_route("reviews", rule(TO_V1), parent_port=50051)], {50051}, id="port"),
    pytest.param([grpc_route("reviews", rule(TO_V1), parent_port=50052)], {50052}, id="port-2"),
    pytest.param([grpc_route("reviews", rule(TO_V1), parent_port=9999)], set(),
                 id="port-not-on-service"),
    pytest.param([grpc_route("reviews", rule(TO_V1), parent_namespace="other")], set(),
                 id="parent-in-other-namespace"),
    pytest.param([grpc_route("ratings", rule(TO_V1))], set(), id="other-parent"),
    pytest.param([with_parents(ParentRef(name="reviews", namespace="default", port=50051),
                               ParentRef(name="reviews", namespace="default", port=50052))],
                 {50051, 50052}, id="two-parent-refs"),
    pytest.param([with_parents(ParentRef(name="reviews", namespace="default", kind="Gateway"))],
                 set(), id="gateway-parent-ignored"),
    # Documented: a route in another namespace applies to every caller of the Service.
    pytest.param([grpc_route("reviews", rule(TO_V1), namespace="shop",
                             parent_namespace="default")],
                 {50051, 50052}, id="route-from-another-namespace"),
])
def test_parent_ref_attachment(routes, expected):
    assert attached_ports(*routes) == expected


def test_parent_port_is_the_default_backend_port():
    model = mesh_of(grpc_route("reviews", rule(backend("reviews", 1))), reviews=TWO_PORTS)
    assert routes_of(model, f"{FQDN}:50052")[0].route.cluster == f"outbound|50052||{FQDN}"
    assert routes_of(model, f"{FQDN}:50051")[0].route.cluster == OWN


def test_cluster_domain_is_used_for_route_and_cluster_names():
    model = mesh(service("reviews"), service("reviews-v1"), grpc_route("reviews", rule(TO_V1)),
                 mesh_config=MeshConfig(cluster_domain="corp.example"))
    configs = build_resources(model, GRPC)[ROUTE]
    (vhost,) = configs["reviews.default.svc.corp.example:50051"].virtual_hosts
    assert "reviews.default.svc.corp.example" in vhost.domains
    assert vhost.routes[0].route.cluster == "outbound|50051||reviews-v1.default.svc.corp.example"
