"""Pure routing: virtual host choice by domain rank, first-match route selection."""

from __future__ import annotations

import pytest

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
