"""GRPCRoute and HTTPRoute: GAMMA parents, matches, backends, timeouts, references."""

from __future__ import annotations

import pytest

from tests.xds_server.sources.source_builders import lines, parse, parse_ok, route, service
from xds_server.model import BackendRef, HeaderMatch, ParentRef, PathMatch, RouteMatch
from xds_server.sources import grpc_method_path

SERVICES = (service(), service("reviews-v1"), service("reviews-v2"))


def rule_of(*objects: dict) -> object:
    model = parse_ok(*SERVICES, *objects)
    return model.routes[0].rules[0]


# --------------------------------------------------------------- gRPC method → path


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ({"service": "demo.Reviews", "method": "Get"}, ("Exact", "/demo.Reviews/Get")),
        (
            {"type": "Exact", "service": "demo.Reviews", "method": "Get"},
            ("Exact", "/demo.Reviews/Get"),
        ),
        ({"service": "demo.Reviews"}, ("PathPrefix", "/demo.Reviews/")),
        ({"method": "Get"}, ("RegularExpression", "/[^/]+/Get")),
        (
            {"type": "RegularExpression", "service": "demo\\..*", "method": "Get.*"},
            ("RegularExpression", "/(?:demo\\..*)/(?:Get.*)"),
        ),
        (
            {"type": "RegularExpression", "service": "demo.Reviews"},
            ("RegularExpression", "/(?:demo.Reviews)/[^/]+"),
        ),
        ({"type": "RegularExpression", "method": "List.*"},
         ("RegularExpression", "/[^/]+/(?:List.*)")),
        ({"type": "RegularExpression", "service": "a\\.A|b\\.B", "method": "Get"},
         ("RegularExpression", "/(?:a\\.A|b\\.B)/(?:Get)")),  # | stays in its segment
        ({"type": "RegularExpression"}, ("RegularExpression", "/[^/]+/[^/]+")),
    ],
)
def test_grpc_method_match_becomes_a_path_match(method: dict, expected: tuple) -> None:
    rule = rule_of(
        route(
            rules=[
                {
                    "matches": [{"method": method}],
                    "backendRefs": [{"name": "reviews", "port": 50051}],
                }
            ]
        )
    )
    assert rule.matches == (RouteMatch(path=PathMatch(type=expected[0], value=expected[1])),)


def test_grpc_method_path_needs_service_or_method() -> None:
    with pytest.raises(ValueError, match="service, a method or both"):
        grpc_method_path("Exact", "", "")


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ({}, "spec.rules[0].matches[0].method: must set service, method or both"),
        (
            {"service": "demo/Reviews"},
            "spec.rules[0].matches[0].method.service: must be a gRPC service name like "
            'pkg.Service, got "demo/Reviews"',
        ),
        (
            {"method": "Get/All"},
            'spec.rules[0].matches[0].method.method: must be a gRPC method name, got "Get/All"',
        ),
        (
            {"type": "RegularExpression", "method": "Get("},
            "spec.rules[0].matches[0].method.method: must be a valid RE2 regular expression "
            '(missing ): Get(), got "Get("',
        ),
        (
            {"type": "Prefix", "method": "Get"},
            "spec.rules[0].matches[0].method.type: must be one of Exact, RegularExpression; "
            'got "Prefix"',
        ),
    ],
)
def test_grpc_method_match_problems(method: dict, expected: str) -> None:
    _, problems = parse(*SERVICES, route(rules=[{"matches": [{"method": method}]}]))
    assert lines(problems) == [f"mesh.yaml: GRPCRoute default/reviews: {expected}"]


def test_grpc_header_matches_lower_case_the_name() -> None:
    rule = rule_of(
        route(
            rules=[
                {
                    "matches": [
                        {
                            "headers": [
                                {"name": "X-Canary", "value": "true"},
                                {
                                    "type": "RegularExpression",
                                    "name": "x-user",
                                    "value": "^(alice|bob)$",
                                },
                            ]
                        }
                    ]
                }
            ]
        )
    )
    assert rule.matches[0].headers == (
        HeaderMatch(name="x-canary", value="true"),
        HeaderMatch(name="x-user", value="^(alice|bob)$", type="RegularExpression"),
    )
    assert rule.matches[0].path is None  # GRPCRoute: no path unless a method match


# --------------------------------------------------------------------- HTTPRoute


def test_http_route_matches() -> None:
    rule = rule_of(
        route(
            "HTTPRoute",
            rules=[
                {
                    "matches": [
                        {"path": {"type": "Exact", "value": "/health"}, "method": "GET"},
                        {
                            "path": {"value": "/api"},
                            "headers": [{"name": "X-Version", "value": "2"}],
                            "queryParams": [
                                {"name": "Debug", "value": "1"},
                                {"type": "RegularExpression", "name": "id", "value": "[0-9]+"},
                            ],
                        },
                        {},
                    ]
                }
            ],
        )
    )
    assert rule.matches == (
        RouteMatch(path=PathMatch(type="Exact", value="/health"), method="GET"),
        RouteMatch(
            path=PathMatch(type="PathPrefix", value="/api"),
            headers=(HeaderMatch(name="x-version", value="2"),),
            query_params=(
                HeaderMatch(name="Debug", value="1"),  # names keep their case
                HeaderMatch(name="id", value="[0-9]+", type="RegularExpression"),
            ),
        ),
        RouteMatch(path=PathMatch(type="PathPrefix", value="/")),  # API server default
    )


def test_http_rule_without_matches_gets_the_api_server_default() -> None:
    rule = rule_of(route("HTTPRoute"))
    assert rule.matches == (RouteMatch(path=PathMatch(type="PathPrefix", value="/")),)


def test_http_timeouts() -> None:
    rule = rule_of(
        route(
            "HTTPRoute",
            rules=[
                {
                    "timeouts": {"request": "10s", "backendRequest": "2s500ms"},
                    "backendRefs": [{"name": "reviews", "port": 50051}],
                }
            ],
        )
    )
    assert (rule.timeout, rule.backend_request_timeout) == (10.0, 2.5)


@pytest.mark.parametrize(
    ("kind", "rule", "expected"),
    [
        (
            "HTTPRoute",
            {"matches": [{"path": {"value": "api"}}]},
            'spec.rules[0].matches[0].path.value: must start with "/", got "api"',
        ),
        (
            "HTTPRoute",
            {"matches": [{"method": "get"}]},
            'spec.rules[0].matches[0].method: unknown value "get" (did you mean "GET"?)',
        ),
        (
            "HTTPRoute",
            {"matches": [{"method": "FETCH"}]},
            "spec.rules[0].matches[0].method: must be one of GET, HEAD, POST, PUT, DELETE, "
            'CONNECT, OPTIONS, TRACE, PATCH; got "FETCH"',
        ),
        (
            "HTTPRoute",
            {"timeouts": {"request": "1s", "backendRequest": "2s"}},
            "spec.rules[0].timeouts.backendRequest: must not be longer than the request timeout "
            "(timeouts.request)",
        ),
        (
            "HTTPRoute",
            {"timeouts": {"request": 10}},
            'spec.rules[0].timeouts.request: must be a duration like "1s", "500ms" or "1m30s", '
            'got integer 10 (add a unit: "10s")',
        ),
        (
            "HTTPRoute",
            {"filters": [{"type": "RequestHeaderModifier"}]},
            'spec.rules[0].filters[0]: filter type "RequestHeaderModifier" is not supported yet',
        ),
        (
            "HTTPRoute",
            {"retry": {"attempts": 2}},
            "spec.rules[0].retry: HTTPRoute retry is not supported yet",
        ),
        (
            "GRPCRoute",
            {"sessionPersistence": {"type": "Cookie"}},
            "spec.rules[0].sessionPersistence: sessionPersistence is not supported yet",
        ),
        (
            "GRPCRoute",
            {"timeouts": {"request": "1s"}},
            "spec.rules[0].timeouts: is an HTTPRoute field; set timeout in a TrafficPolicy instead",
        ),
        (
            "GRPCRoute",
            {"matches": [{"path": {"value": "/"}}]},
            "spec.rules[0].matches[0].path: unknown field (known fields: headers, method)",
        ),
        (
            "GRPCRoute",
            {"matches": [{"headers": [{"name": "x-a", "value": True}]}]},
            "spec.rules[0].matches[0].headers[0].value: must be a string, got boolean true "
            '(quote it: "true")',
        ),
        (
            "GRPCRoute",
            {"matches": [{"headers": [{"name": "x a", "value": "1"}]}]},
            'spec.rules[0].matches[0].headers[0].name: must be a header name, got "x a"',
        ),
    ],
)
def test_rule_problems(kind: str, rule: dict, expected: str) -> None:
    rule.setdefault("backendRefs", [{"name": "reviews", "port": 50051}])
    _, problems = parse(*SERVICES, route(kind, rules=[rule]))
    assert lines(problems) == [f"mesh.yaml: {kind} default/reviews: {expected}"]


def test_backend_filters_are_reported_too() -> None:
    backend = {"name": "reviews", "port": 50051, "filters": [{"type": "RequestMirror"}]}
    _, problems = parse(*SERVICES, route(rules=[{"backendRefs": [backend]}]))
    assert lines(problems) == [
        "mesh.yaml: GRPCRoute default/reviews: spec.rules[0].backendRefs[0].filters[0]: "
        'filter type "RequestMirror" is not supported yet'
    ]


# ------------------------------------------------------------ parents and backends


def test_parents_backends_and_defaults() -> None:
    obj = route(
        parentRefs=[
            {"name": "gateway"},  # kind defaults to Gateway: not a mesh parent
            {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
            {"group": "", "kind": "Service", "name": "reviews", "port": 50051},
            {"kind": "Service", "name": "reviews-v1"},  # group left out: core
            # ...and as the API server stores it, with the CRD's default group:
            {"group": "gateway.networking.k8s.io", "kind": "Service", "name": "reviews-v2"},
            {"group": "example.com", "kind": "Service", "name": "other"},  # not ours
        ],
        hostnames=["reviews.example.com"],
        rules=[
            {
                "name": "split",
                "backendRefs": [
                    {"name": "reviews-v1", "port": 50051, "weight": 90},
                    {"group": "", "kind": "Service", "name": "reviews-v2", "port": 50051},
                ],
            }
        ],
    )
    model = parse_ok(*SERVICES, obj)
    (parsed,) = model.routes
    assert parsed.parent_refs == (
        ParentRef(name="reviews", namespace="default", port=50051),
        ParentRef(name="reviews-v1", namespace="default"),
        ParentRef(name="reviews-v2", namespace="default"),
    )
    assert parsed.hostnames == ("reviews.example.com",)
    assert parsed.rules[0].name == "split"
    assert parsed.rules[0].backend_refs == (
        BackendRef(name="reviews-v1", namespace="default", port=50051, weight=90),
        BackendRef(name="reviews-v2", namespace="default", port=50051, weight=1),
    )
    assert model.routes_for(model.services[0]) == (parsed,)


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha2"])
def test_every_gateway_api_version_is_accepted(version: str) -> None:
    model = parse_ok(*SERVICES, route(api_version=f"gateway.networking.k8s.io/{version}"))
    assert len(model.routes) == 1


def test_cross_namespace_parent_and_backend() -> None:
    obj = route(
        parentRefs=[{"kind": "Service", "name": "reviews", "namespace": "shop"}],
        rules=[{"backendRefs": [{"name": "reviews", "namespace": "shop", "port": 50051}]}],
    )
    model = parse_ok(service(namespace="shop"), obj)
    assert model.routes[0].parent_refs[0].namespace == "shop"
    assert model.routes[0].rules[0].backend_refs[0].namespace == "shop"


def test_route_attached_to_no_service() -> None:
    obj = route(parentRefs=[{"name": "my-gateway"}])
    model, problems = parse(*SERVICES, obj)
    assert lines(problems) == [
        "mesh.yaml: GRPCRoute default/reviews: spec.parentRefs: attaches to no Service "
        "(GAMMA parentRefs kind: Service)"
    ]
    assert model.routes == ()


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        (
            {"name": "reviews"},
            "spec.rules[0].backendRefs[0].port: is required for a Service backend",
        ),
        (
            {"name": "reviews", "port": 50051, "weight": -1},
            "spec.rules[0].backendRefs[0].weight: must be an integer between 0 and 1000000, got -1",
        ),
        (
            {"name": "reviews", "port": 50051, "weight": 1.5},
            "spec.rules[0].backendRefs[0].weight: must be an integer between 0 and 1000000, "
            "got number 1.5",
        ),
        (
            {"name": "reviews", "port": 50051, "kind": "Pod"},
            'spec.rules[0].backendRefs[0].kind: only Service backends (group "") are supported, '
            "got Pod",
        ),
        (
            {"name": "ratings", "port": 50051},
            "spec.rules[0].backendRefs[0].name: backend Service default/ratings not found",
        ),
        (
            {"name": "reviews", "port": 9090},
            "spec.rules[0].backendRefs[0].port: Service default/reviews has no port 9090 "
            "(ports: 50051)",
        ),
    ],
)
def test_backend_problems(backend: dict, expected: str) -> None:
    _, problems = parse(*SERVICES, route(rules=[{"backendRefs": [backend]}]))
    assert lines(problems) == [f"mesh.yaml: GRPCRoute default/reviews: {expected}"]


def test_parent_problems() -> None:
    obj = route(
        parentRefs=[
            {"kind": "Service", "name": "ratings"},
            {"kind": "Service", "name": "reviews", "port": 8080},
            {"kind": "Service", "name": "reviews-v1", "sectionName": "grpc"},
        ]
    )
    _, problems = parse(*SERVICES, obj)
    assert lines(problems) == [
        "mesh.yaml: GRPCRoute default/reviews: spec.parentRefs[0].name: parent Service "
        "default/ratings not found",
        "mesh.yaml: GRPCRoute default/reviews: spec.parentRefs[1].port: Service default/reviews "
        "has no port 8080 (ports: 50051)",
        "mesh.yaml: GRPCRoute default/reviews: spec.parentRefs[2].sectionName: is not supported "
        "for Service parents yet; use port",
    ]


def test_a_dangling_backend_keeps_the_route() -> None:
    model, problems = parse(
        service(), route(rules=[{"backendRefs": [{"name": "gone", "port": 50051}]}])
    )
    assert len(problems) == 1
    assert len(model.routes) == 1  # Gateway API: the missing backend answers with errors


def test_grpc_and_http_routes_of_the_same_name_both_count() -> None:
    model = parse_ok(*SERVICES, route("HTTPRoute"), route("GRPCRoute"))
    assert [r.kind for r in model.routes] == ["GRPCRoute", "HTTPRoute"]


@pytest.mark.parametrize(
    ("kind", "match", "expected"),
    [
        (
            "HTTPRoute",
            {"path": {"type": "RegularExpression", "value": r"/(a)\1"}},
            "spec.rules[0].matches[0].path.value: must be a valid RE2 regular expression "
            r'(invalid escape sequence: \1), got "/(a)\\1"',
        ),
        (
            "HTTPRoute",
            {"headers": [{"type": "RegularExpression", "name": "x-user", "value": "(?=adm)"}]},
            "spec.rules[0].matches[0].headers[0].value: must be a valid RE2 regular "
            'expression (invalid perl operator: (?=), got "(?=adm)"',
        ),
        (
            "HTTPRoute",
            {"queryParams": [{"type": "RegularExpression", "name": "v", "value": "a{1001}"}]},
            "spec.rules[0].matches[0].queryParams[0].value: must be a valid RE2 regular "
            'expression (invalid repetition size: {1001}), got "a{1001}"',
        ),
        (
            "GRPCRoute",
            {"method": {"type": "RegularExpression", "service": "(?<!x)svc"}},
            "spec.rules[0].matches[0].method.service: must be a valid RE2 regular "
            'expression (invalid perl operator: (?<!), got "(?<!x)svc"',
        ),
    ],
)
def test_regexes_re2_refuses_are_problems(kind: str, match: dict, expected: str) -> None:
    """gRPC and Envoy match with RE2: what Python's re alone accepts is refused."""
    rule = {"matches": [match], "backendRefs": [{"name": "reviews", "port": 50051}]}
    _, problems = parse(*SERVICES, route(kind, rules=[rule]))
    assert lines(problems) == [f"mesh.yaml: {kind} default/reviews: {expected}"]


def test_what_only_re2_accepts_is_accepted() -> None:
    rule = {"matches": [{"path": {"type": "RegularExpression", "value": r"/\pL+/[[:digit:]]+"}}],
            "backendRefs": [{"name": "reviews", "port": 50051}]}
    _, problems = parse(*SERVICES, route("HTTPRoute", rules=[rule]))
    assert lines(problems) == []


def test_a_regex_alternation_stays_in_its_segment() -> None:
    import re2

    path = grpc_method_path("RegularExpression", r"a\.A|b\.B", "Get").value
    assert re2.fullmatch(path, "/b.B/Get") and re2.fullmatch(path, "/a.A/Get")
    assert not re2.fullmatch(path, "/a.A/Other")  # ungrouped, "/a\.A|b\.B/Get" matched it
