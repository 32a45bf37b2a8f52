"""Snapshot values: stable versions, subset versions, consistency, diff."""

from __future__ import annotations

import dataclasses

import pytest

from meshlib.errors import InconsistentSnapshotError, XdsError
from tests.xds_server.xds_test_resources import (
    cluster,
    load_assignment,
    mesh,
    rds_listener,
    route_config,
    socket_listener,
)
from xds_server.cache import Resource, Snapshot, TypeDiff, diff
from xds_server.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE


def test_equal_content_gives_equal_versions() -> None:
    a = Snapshot.from_messages(mesh())
    b = Snapshot.from_messages(mesh())
    assert a.version == b.version
    assert a == b  # created_at differs, does not count
    assert a.get(CLUSTER, "reviews-v1").version == b.get(CLUSTER, "reviews-v1").version
    assert len(a.version) == 16


def test_changed_resource_changes_its_version_and_the_snapshot_version() -> None:
    a = Snapshot.from_messages(mesh())
    b = Snapshot.from_messages(mesh(weights={"reviews": {"reviews-v1": 90, "reviews-v2": 10}}))
    assert a.version != b.version
    assert a.get(ROUTE, "reviews").version != b.get(ROUTE, "reviews").version
    assert a.get(CLUSTER, "reviews-v1") == b.get(CLUSTER, "reviews-v1")
    assert a.version_of(CLUSTER) == b.version_of(CLUSTER)
    assert a.version_of(ROUTE) != b.version_of(ROUTE)


def test_version_of_a_subset_ignores_order_and_absent_names() -> None:
    s = Snapshot.from_messages(mesh())
    both = s.version_of(ENDPOINT, ["reviews-v1", "reviews-v2"])
    assert both == s.version_of(ENDPOINT, ["reviews-v2", "reviews-v1", "nope"])
    assert both == s.version_of(ENDPOINT)
    assert s.version_of(ENDPOINT, ["reviews-v1"]) != both
    assert s.version_of(ENDPOINT, ["nope"]) == s.version_of(ENDPOINT, [])


def test_resource_is_deterministic_bytes_and_checks_its_type() -> None:
    r = Resource.from_message(CLUSTER, "c", cluster("c"))
    assert r.serialized == cluster("c").SerializeToString(deterministic=True)
    assert r.to_any().type_url == CLUSTER
    with pytest.raises(XdsError, match="is not a"):
        Resource.from_message(ROUTE, "c", cluster("c"))


def test_snapshot_is_frozen() -> None:
    s = Snapshot.from_messages(mesh())
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.resources = {}  # type: ignore[misc]
    # version is a read-only property (CPython 3.11 raises TypeError for slotted
    # frozen dataclasses here, later versions AttributeError).
    with pytest.raises((AttributeError, TypeError)):
        s.version = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.resources[CLUSTER]["x"] = s.get(CLUSTER, "reviews-v1")  # type: ignore[index]


def test_misfiled_resource_is_refused() -> None:
    r = Resource.from_message(CLUSTER, "a", cluster("a"))
    with pytest.raises(XdsError, match="filed as"):
        Snapshot(resources={CLUSTER: {"b": r}})


def test_consistent_snapshot_passes() -> None:
    Snapshot.from_messages(mesh()).check_consistent()


def test_consistency_names_every_missing_rds_eds_and_cluster() -> None:
    s = Snapshot.from_messages({
        LISTENER: {
            "grpc": rds_listener("grpc", "missing-route-1"),
            "envoy": socket_listener("envoy", "missing-route-2"),
            "ok": rds_listener("ok", "ok"),
        },
        ROUTE: {"ok": route_config("ok", {"c1": 1, "ghost-cluster": 1})},
        CLUSTER: {"c1": cluster("c1"), "c2": cluster("c2", service_name="c2-eds")},
        ENDPOINT: {"c1": load_assignment("c1")},
    })
    with pytest.raises(InconsistentSnapshotError) as info:
        s.check_consistent()
    assert info.value.missing == {
        ROUTE: ("missing-route-1", "missing-route-2"),
        CLUSTER: ("ghost-cluster",),
        ENDPOINT: ("c2-eds",),
    }
    assert "missing-route-1" in str(info.value) and "c2-eds" in str(info.value)


def test_eds_name_is_the_cluster_name_without_service_name() -> None:
    s = Snapshot.from_messages({CLUSTER: {"c": cluster("c")}})
    with pytest.raises(InconsistentSnapshotError) as info:
        s.check_consistent()
    assert info.value.missing == {ENDPOINT: ("c",)}


def test_diff_reports_changed_and_removed_names_per_type() -> None:
    old = Snapshot.from_messages(mesh())
    changed = mesh({"reviews": {"reviews-v1": (50051, 50053), "reviews-v3": (50054,)}})
    new = Snapshot.from_messages(changed)
    d = diff(old, new)
    assert d[ENDPOINT] == TypeDiff(changed=frozenset({"reviews-v1", "reviews-v3"}),
                                   removed=frozenset({"reviews-v2"}))
    assert d[CLUSTER] == TypeDiff(changed=frozenset({"reviews-v3"}),
                                  removed=frozenset({"reviews-v2"}))
    assert LISTENER not in d
    assert diff(old, Snapshot.from_messages(mesh())) == {}
    assert diff(None, old)[LISTENER] == TypeDiff(changed=frozenset({"reviews"}))
