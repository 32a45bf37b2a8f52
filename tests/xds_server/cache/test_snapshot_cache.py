"""SnapshotCache: watches answered when (and only when) a stream's answer changes."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from meshlib.errors import InconsistentSnapshotError
from tests.xds_server.xds_test_resources import grpc_node, mesh, rds_listener
from xds_server.cache import (
    DeltaResponse,
    Response,
    Snapshot,
    SnapshotCache,
    WatchRequest,
    sotw_answer,
)
from xds_server.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

GROUP = "grpc/default"
NODE = grpc_node()


def watch(type_url: str, *names: str, **kw: Any) -> WatchRequest:
    return WatchRequest(stream_id=1, node=NODE, type_url=type_url, names=frozenset(names), **kw)


def known_of(response: Response) -> dict[str, str]:
    return {r.name: r.version for r in response.resources}


def test_group_key_defaults_to_node_group_and_can_be_replaced() -> None:
    assert SnapshotCache().group_key(NODE) == GROUP
    assert SnapshotCache(group_of=lambda node: node.id).group_key(NODE) == "client-1"


def test_inconsistent_snapshot_raises_and_is_not_stored() -> None:
    cache = SnapshotCache()
    good = Snapshot.from_messages(mesh())
    cache.set_snapshot(GROUP, good)
    with pytest.raises(InconsistentSnapshotError):
        cache.set_snapshot(GROUP, Snapshot.from_messages({LISTENER: {"l": rds_listener("l")}}))
    assert cache.get_snapshot(GROUP) is good
    assert cache.groups() == (GROUP,)
    cache.clear(GROUP)
    assert cache.get_snapshot(GROUP) is None and cache.groups() == ()


def test_watch_waits_for_a_snapshot_then_is_answered_once() -> None:
    cache = SnapshotCache()
    got: list[Response] = []
    cache.create_watch(watch(CLUSTER, "reviews-v1"), got.append)
    assert got == [] and len(cache.open_watches(GROUP)) == 1
    snapshot = Snapshot.from_messages(mesh())
    cache.set_snapshot(GROUP, snapshot)
    assert [r.name for r in got[0].resources] == ["reviews-v1"]
    assert got[0].version == snapshot.version_of(CLUSTER, ["reviews-v1"])
    assert got[0].snapshot is snapshot
    assert cache.open_watches() == ()  # one-shot
    cache.set_snapshot(GROUP, Snapshot.from_messages(mesh({"reviews": {"reviews-v1": (1,)}})))
    assert len(got) == 1


def test_watch_is_answered_at_once_when_the_snapshot_exists() -> None:
    cache = SnapshotCache()
    cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
    got: list[Response] = []
    cache.create_watch(watch(ENDPOINT, "reviews-v1", "reviews-v2"), got.append)
    assert len(got) == 1 and len(got[0].resources) == 2


def test_cancelled_watch_is_never_answered() -> None:
    cache = SnapshotCache()
    got: list[Response] = []
    cancel = cache.create_watch(watch(CLUSTER, "reviews-v1"), got.append)
    cancel()
    cancel()  # idempotent
    cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
    assert got == []


def test_only_watches_whose_subscribed_resources_changed_are_answered() -> None:
    cache = SnapshotCache()
    first = Snapshot.from_messages(mesh())
    cache.set_snapshot(GROUP, first)
    v1, v2 = (
        watch(ENDPOINT, n, known={n: first.get(ENDPOINT, n).version}, answered=True)
        for n in ("reviews-v1", "reviews-v2")
    )
    got: list[str] = []
    cache.create_watch(v1, lambda r: got.append("v1"))
    cache.create_watch(v2, lambda r: got.append("v2"))
    assert got == []
    cache.set_snapshot(GROUP, Snapshot.from_messages(
        mesh({"reviews": {"reviews-v1": (50051,), "reviews-v2": (60000,)}})))
    assert got == ["v2"]


def test_set_snapshot_answers_in_ads_order() -> None:
    cache = SnapshotCache()
    order: list[str] = []
    for type_url, name in ((ROUTE, "reviews"), (LISTENER, "reviews"),
                           (ENDPOINT, "reviews-v1"), (CLUSTER, "reviews-v1")):
        cache.create_watch(watch(type_url, name), lambda r, t=type_url: order.append(t))
    cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
    assert order == [CLUSTER, ENDPOINT, LISTENER, ROUTE]


def test_a_failing_respond_does_not_stop_the_others() -> None:
    cache = SnapshotCache()
    got: list[Response] = []

    def boom(response: Response) -> None:
        raise RuntimeError("broken stream")

    cache.create_watch(watch(CLUSTER, "reviews-v1"), boom)
    cache.create_watch(watch(CLUSTER, "reviews-v2"), got.append)
    cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
    assert len(got) == 1


def test_groups_are_separate() -> None:
    cache = SnapshotCache()
    got: list[Response] = []
    cache.create_watch(watch(CLUSTER, "reviews-v1"), got.append)
    cache.set_snapshot("grpc/other", Snapshot.from_messages(mesh()))
    assert got == []
    other = WatchRequest(stream_id=2, node=grpc_node("x", "other"), type_url=CLUSTER,
                         names=frozenset({"reviews-v1"}))
    cache.create_watch(other, got.append)
    assert len(got) == 1


def test_full_state_types_answer_unknown_names_at_once_others_wait() -> None:
    s = Snapshot.from_messages(mesh())
    lds = sotw_answer(watch(LISTENER, "nope"), s)
    assert lds is not None and lds.resources == () and lds.absent == ("nope",)
    assert sotw_answer(watch(CLUSTER, "nope"), s) is not None
    assert sotw_answer(watch(ROUTE, "nope"), s) is None
    assert sotw_answer(watch(ENDPOINT, "nope"), s) is None
    # once told, not again
    told = watch(LISTENER, "nope", known={"nope": ""}, answered=True)
    assert sotw_answer(told, s) is None


def test_full_state_push_when_a_known_resource_disappears() -> None:
    s = Snapshot.from_messages(mesh())
    w = watch(CLUSTER, "reviews-v1", "reviews-v2", answered=True,
              known={n: s.get(CLUSTER, n).version for n in ("reviews-v1", "reviews-v2")})
    assert sotw_answer(w, s) is None
    smaller = Snapshot.from_messages(mesh({"reviews": {"reviews-v1": (50051,)}}))
    answer = sotw_answer(w, smaller)
    assert answer is not None and [r.name for r in answer.resources] == ["reviews-v1"]
    assert answer.absent == ("reviews-v2",)


def test_wildcard_gets_everything_and_is_answered_even_if_empty() -> None:
    s = Snapshot.from_messages(mesh({"a": {"a": (1,)}, "b": {"b": (2,)}}))
    answer = sotw_answer(watch(CLUSTER, wildcard=True), s)
    assert answer is not None and [r.name for r in answer.resources] == ["a", "b"]
    empty = sotw_answer(watch(CLUSTER, wildcard=True), Snapshot.from_messages({}))
    assert empty is not None and empty.resources == ()


def test_reconnect_with_the_current_version_is_not_answered() -> None:
    s = Snapshot.from_messages(mesh())
    version = s.version_of(ROUTE, ["reviews"])
    assert sotw_answer(watch(ROUTE, "reviews", version_info=version), s) is None
    assert sotw_answer(watch(LISTENER, "reviews", version_info=s.version_of(LISTENER)), s) is None
    assert sotw_answer(watch(ROUTE, "reviews", version_info="old"), s) is not None


def test_delta_watch_sends_changes_and_removals_only() -> None:
    cache = SnapshotCache()
    first = Snapshot.from_messages(mesh())
    cache.set_snapshot(GROUP, first)
    got: list[DeltaResponse] = []
    known = {n: r.version for n, r in first.of_type(CLUSTER).items()}
    cache.create_delta_watch(watch(CLUSTER, wildcard=True, known=known, answered=True), got.append)
    assert got == []
    cache.set_snapshot(GROUP, Snapshot.from_messages(
        mesh({"reviews": {"reviews-v1": (50051,), "reviews-v3": (1,)}})))
    assert [r.name for r in got[0].resources] == ["reviews-v3"]
    assert got[0].removed == ("reviews-v2",)
    assert got[0].system_version == cache.get_snapshot(GROUP).version


def test_delta_reports_unknown_subscribed_names_as_removed() -> None:
    cache = SnapshotCache()
    cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
    got: list[DeltaResponse] = []
    cache.create_delta_watch(watch(ENDPOINT, "reviews-v1", "ghost"), got.append)
    assert [r.name for r in got[0].resources] == ["reviews-v1"]
    assert got[0].removed == ("ghost",)


def test_cache_refuses_a_second_thread() -> None:
    cache = SnapshotCache()
    cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
    errors: list[BaseException] = []

    def other() -> None:
        try:
            cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errors and "event loop" in str(errors[0])
