"""RouteTable: weighted cluster picks, header routes, hash keys, memoized routing."""

from __future__ import annotations

import collections

import grpc
import pytest

from meshlib._cluster_state import ClusterState
from meshlib._route_table import RouteTable
from meshlib.errors import CallError
from meshlib.xds import (
    ClusterWeight,
    HashPolicy,
    HeaderMatcher,
    Route,
    RouteAction,
    RouteMatch,
    StringMatcher,
    VirtualHost,
)


def action(*weights: tuple[str, int], **kw: object) -> RouteAction:
    clusters = tuple(ClusterWeight(name=n, weight=w) for n, w in weights)
    return RouteAction(clusters=clusters, total_weight=sum(w for _, w in weights), **kw)


def table(routes: list[Route]) -> RouteTable:
    names = {c.name for r in routes if r.action for c in r.action.clusters}
    vhost = VirtualHost(name="reviews", domains=("reviews",), routes=tuple(routes))
    return RouteTable.build("reviews", vhost, {n: ClusterState(n) for n in names})


def test_weighted_pick_follows_weights():
    t = table([Route(name="r", match=RouteMatch(prefix=""),
                     action=action(("v1", 90), ("v2", 10)))])
    entry = t.route("/demo.Reviews/Get", None)
    counts = collections.Counter(entry.pick_cluster().name for _ in range(10_000))
    assert abs(counts["v2"] / 10_000 - 0.1) < 0.02


def test_header_route_and_memo():
    canary = HeaderMatcher(name="x-canary", string=StringMatcher(kind="exact", value="1"))
    t = table([
        Route(name="canary", match=RouteMatch(prefix="", headers=(canary,)),
              action=action(("v2", 1))),
        Route(name="default", match=RouteMatch(prefix=""), action=action(("v1", 1))),
    ])
    assert not t.by_method_only
    assert t.route("/m", [("x-canary", "1")]).route.name == "canary"
    assert t.route("/m", [("X-Canary", "1")]).route.name == "canary"
    assert t.route("/m", None).route.name == "default"
    plain = table([Route(name="d", match=RouteMatch(prefix=""), action=action(("v1", 1)))])
    assert plain.by_method_only
    assert plain.route("/m", None) is plain.route("/m", [("x", "y")])


def test_no_route_is_unavailable():
    t = table([Route(name="only", match=RouteMatch(path="/a/B"), action=action(("v1", 1)))])
    with pytest.raises(CallError) as info:
        t.route("/a/C", None)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_hash_key_from_metadata():
    t = table([Route(name="r", match=RouteMatch(prefix=""),
                     action=action(("v1", 1),
                                   hash_policies=(HashPolicy(header_name="x-user"),)))])
    entry = t.route("/m", None)
    assert entry.hash_key([("X-User", "alice")]) == "alice"
    assert entry.hash_key([("other", "x")]) is None
    assert entry.hash_key(None) is None


def test_route_timeout_is_the_smaller_limit():
    t = table([Route(name="r", match=RouteMatch(prefix=""),
                     action=action(("v1", 1), timeout=3.0, max_stream_duration=2.0))])
    assert t.route("/m", None).timeout == 2.0
