"""Pure routing: virtual host choice by domain rank, first-match route selection."""

from __future__ import annotations

import time

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2

from meshlib.contract.regex import MAX_MATCH_LENGTH
from meshlib.xds import (
    ROUTE,
    HeaderMatcher,
    QueryParameterMatcher,
    Route,
    RouteMatch,
    StringMatcher,
    VirtualHost,
    decode_route_config,
    match_route,
    pick_virtual_host,
)
from tests.meshlib.xds.xds_models import RDS, V1, V2, pack


def _vh(name: str, *domains: str) -> VirtualHost:
    return VirtualHost(name=name, domains=domains, routes=())


VHOSTS = (
    _vh("any", "*"),
    _vh("prefix", "foo.*"),
    _vh("longer-prefix", "foo.bar.*"),
    _vh("suffix", "*.example.com"),
    _vh("longer-suffix", "*.api.example.com"),
    _vh("exact", "foo.example.com", "Reviews:50051"),
    _vh("bad", "f*o"),
)


@pytest.mark.parametrize(("authority", "expected"), [
    ("foo.example.com", "exact"),           # exact beats suffix and prefix
    ("reviews:50051", "exact"),              # case-insensitive
    ("x.api.example.com", "longer-suffix"),  # longest suffix wins
    ("y.example.com", "suffix"),
    ("foo.bar.baz", "longer-prefix"),        # longest prefix wins
    ("foo.org", "prefix"),
    ("fxo", "any"),                          # "f*o" (wildcard inside) matches nothing
    ("other", "any"),
])
def test_pick_virtual_host(authority, expected):
    assert pick_virtual_host(VHOSTS, authority).name == expected


def test_pick_virtual_host_none():
    assert pick_virtual_host([_vh("x", "a.b")], "c.d") is None


def _route(name: str, **match: object) -> Route:
    return Route(name=name, match=RouteMatch(**match))


def test_match_route_first_match_wins():
    routes = [
        _route("exact", path="/svc/Get"),
        _route("regex", regex=r"/svc/(Put|Del)"),
        _route("header", prefix="/svc/", headers=(HeaderMatcher(
            name="x-canary", string=StringMatcher(kind="exact", value="1")),)),
        _route("no-debug", prefix="/svc/", headers=(HeaderMatcher(name="x-debug",
                                                                   invert=True),)),
        _route("query", prefix="/", query_parameters=(QueryParameterMatcher(
            name="v", string=StringMatcher(kind="prefix", value="2")),)),
        _route("ci", prefix="/SVC/", case_sensitive=False),
    ]

    def pick(path: str, **headers: str) -> str | None:
        route = match_route(routes, path, {k.replace("_", "-"): v for k, v in headers.items()})
        return None if route is None else route.name

    assert pick("/svc/Get", x_canary="1") == "exact"
    assert pick("/svc/Put") == "regex"
    assert pick("/svc/Putx") == "no-debug"          # regex is a full match
    assert pick("/svc/List", x_canary="1") == "header"
    assert pick("/svc/List") == "no-debug"
    assert pick("/svc/List", x_debug="on") == "ci"
    assert pick("/other?v=2.1") == "query"
    assert pick("/other?v=1") is None


def test_runtime_fraction_uses_injected_rng():
    routes = [_route("half", prefix="", fraction_percent=50.0), _route("rest", prefix="")]
    assert match_route(routes, "/a", {}, rng=lambda: 0.2).name == "half"
    assert match_route(routes, "/a", {}, rng=lambda: 0.7).name == "rest"


def test_translated_canary_routes(canary):
    (vhost,) = decode_route_config(pack(canary[ROUTE][RDS])).virtual_hosts
    assert pick_virtual_host([vhost], "reviews") is vhost
    canary_route = match_route(vhost.routes, "/reviews.Reviews/Get", {"x-canary": "1"})
    assert [c.name for c in canary_route.action.clusters] == [V2]
    split = match_route(vhost.routes, "/reviews.Reviews/Get", {"x-canary": "0"})
    assert [c.name for c in split.action.clusters] == [V1, V2]


# ------------------------------------------------------------ regex denial of service

ADVERSARIAL = "/api/" + "a/" * 4000 + "x"  # ~8 KB: cubic for a backtracking engine


def _regex_routes(path_regex: str, header_regex: str) -> tuple[Route, ...]:
    config = route_pb2.RouteConfiguration(name="rc", virtual_hosts=[rc_pb2.VirtualHost(
        name="v", domains=["*"], routes=[
            rc_pb2.Route(name="by-path", match=rc_pb2.RouteMatch(
                safe_regex={"regex": path_regex}), route={"cluster": "a"}),
            rc_pb2.Route(name="by-header", match=rc_pb2.RouteMatch(prefix="/", headers=[{
                "name": "x-tenant", "safe_regex_match": {"regex": header_regex}}]),
                route={"cluster": "b"}),
            rc_pb2.Route(name="default", match=rc_pb2.RouteMatch(prefix="/"),
                         route={"cluster": "c"})])])
    (vhost,) = decode_route_config(pack(config)).virtual_hosts
    return vhost.routes


def _timed_pick(routes: tuple[Route, ...], path: str, **headers: str) -> str:
    started = time.perf_counter()
    route = match_route(routes, path, headers)
    assert time.perf_counter() - started < 0.01
    return route.name


def test_an_adversarial_path_or_header_against_a_route_regex_is_decided_at_once():
    for glob in (r"/api/.*/.*/.*/export", r"/api/(.*)/(.*)/(.*)/export"):
        routes = _regex_routes(glob, glob)
        assert _timed_pick(routes, ADVERSARIAL) == "default"
        assert _timed_pick(routes, "/", **{"x-tenant": ADVERSARIAL}) == "default"
        assert _timed_pick(routes, "/api/v1/users/1/export") == "by-path"
        assert _timed_pick(routes, "/", **{"x-tenant": "/api/a/b/c/export"}) == "by-header"


def test_a_value_beyond_the_cap_matches_no_regex():
    routes = _regex_routes("/api/.*", "t.*")
    fits, too_long = "a" * (MAX_MATCH_LENGTH - 5), "a" * (MAX_MATCH_LENGTH - 4)
    assert _timed_pick(routes, "/api/" + fits) == "by-path"
    assert _timed_pick(routes, "/api/" + too_long) == "default"
    assert _timed_pick(routes, "/", **{"x-tenant": "t" + fits + "aaaa"}) == "by-header"
    assert _timed_pick(routes, "/", **{"x-tenant": "t" + too_long + "aaaa"}) == "default"
