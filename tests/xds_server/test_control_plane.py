"""ControlPlane: applying models, surviving failures, and forgetting idle node groups."""

from __future__ import annotations

import asyncio

from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from tests.xds_server.translate.model_builders import endpoint, endpoint_slice, mesh, port, service
from xds_server.cache import Snapshot
from xds_server.control_plane import ControlPlane
from xds_server.model import MeshModel
from xds_server.node import NodeGroup
from xds_server.resources import CLUSTER, LISTENER
from xds_server.snapshot_builder import SnapshotBuilder
from xds_server.translate import build_resources

GRPC = NodeGroup(kind="grpc")


def node(namespace: str) -> base_pb2.Node:
    meta = struct_pb2.Struct()
    meta.update({"NAMESPACE": namespace})
    return base_pb2.Node(id=f"n-{namespace}", metadata=meta)


def reviews_model(weight_port: int = 8080) -> MeshModel:
    svc = service("reviews")
    return mesh(svc, endpoint_slice(svc, endpoint("10.0.0.1"), port=weight_port))


async def test_apply_swaps_snapshots_and_skips_equal_models():
    cp = ControlPlane(reviews_model())
    before = cp.snapshot_for(GRPC)
    assert await cp.apply(reviews_model()) is False  # equal: nothing to do
    assert await cp.apply(reviews_model(9090)) is True
    after = cp.cache.get_snapshot(GRPC.key)
    assert after is not None and after.version != before.version


async def test_a_translation_failure_keeps_the_previous_model(monkeypatch):
    cp = ControlPlane(reviews_model())
    before = cp.snapshot_for(GRPC)

    def broken(model, group):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")

    monkeypatch.setattr(cp._builder, "build", broken)
    assert await cp.apply(reviews_model(9090)) is False
    assert cp.model == reviews_model()
    assert cp.cache.get_snapshot(GRPC.key) is before
    monkeypatch.undo()
    assert await cp.apply(reviews_model(9090)) is True  # a retry of the same model works


async def test_portless_service_is_served_without_listeners():
    headless = service("headless")
    headless = type(headless)(name="headless", namespace="default", ports=())
    model = mesh(service("reviews", port(50051)), headless)
    cp = ControlPlane(model)
    snapshot = cp.snapshot_for(GRPC)
    assert not any(name.startswith("headless") for name in snapshot.of_type(LISTENER))
    assert snapshot.of_type(CLUSTER)


async def test_idle_groups_are_forgotten():
    cp = ControlPlane(reviews_model())
    cp.group_idle_seconds = 0.05
    callbacks = cp.callbacks()
    connected, disconnected = callbacks.node_connected, callbacks.node_disconnected
    assert connected is not None and disconnected is not None
    connected(1, node("team-a"), "sotw")
    connected(2, node("team-a"), "sotw")
    assert cp.cache.get_snapshot("grpc/team-a") is not None
    disconnected(1, node("team-a"), "sotw")
    await asyncio.sleep(0.1)
    assert cp.cache.get_snapshot("grpc/team-a") is not None  # one stream still open
    disconnected(2, node("team-a"), "sotw")
    await asyncio.sleep(0.1)
    assert cp.cache.get_snapshot("grpc/team-a") is None
    assert "grpc/team-a" not in cp.cache.groups()


def test_empty_model_equals_whole_translation():
    for group in (GRPC, NodeGroup(kind="envoy")):
        built = SnapshotBuilder().build(MeshModel(), group)
        whole = Snapshot.from_messages(build_resources(MeshModel(), group))
        assert built == whole and built.version == whole.version
