"""The incremental SnapshotBuilder gives exactly what translating the whole model gives."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from xds_server import snapshot_builder
from xds_server.cache import Snapshot
from xds_server.node import NodeGroup
from xds_server.snapshot_builder import SnapshotBuilder
from xds_server.sources.yaml_loader import ConfigLoader
from xds_server.translate import build_resources

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import mesh_gen  # noqa: E402

GROUPS = [NodeGroup(kind="grpc"), NodeGroup(kind="envoy", outbound_port=15001),
          NodeGroup(kind="grpc", namespace="other")]


def whole(model, group) -> Snapshot:
    return Snapshot.from_messages(build_resources(model, group))


def assert_same(a: Snapshot, b: Snapshot) -> None:
    assert {t: dict(v) for t, v in a.resources.items()} == {
        t: dict(v) for t, v in b.resources.items()}
    assert a.version == b.version


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.key)
def test_matches_whole_translation_across_edits(tmp_path, group):
    config = tmp_path / "mesh"
    shutil.copytree(ROOT / "examples" / "mesh", config)
    mesh_gen.write(tmp_path / "mesh" / "generated", services=30, endpoints=3)
    loader = ConfigLoader(config)
    builder = SnapshotBuilder()
    model = loader.load()
    assert_same(builder.build(model, group), whole(model, group))

    # A route edit, an endpoint change, a policy removal and a removed Service.
    (config / "generated" / "routes.yaml").write_text(mesh_gen.route_yaml(30))
    edited = loader.load()
    assert edited.services[5] is model.services[5]  # unchanged files: same objects
    assert_same(builder.build(edited, group), whole(edited, group))

    services = (config / "generated" / "services.yaml").read_text()
    (config / "generated" / "services.yaml").write_text(
        services.replace("10.0.3.1", "10.0.3.9").split("name: svc-29,")[0].rsplit("---", 1)[0])
    (config / "policies.yaml").unlink()
    edited = loader.load()
    assert_same(builder.build(edited, group), whole(edited, group))


def test_unchanged_services_are_not_translated_again(tmp_path, monkeypatch):
    config = tmp_path / "mesh"
    mesh_gen.write(config, services=20, endpoints=2)
    loader = ConfigLoader(config)
    builder = SnapshotBuilder()
    group = NodeGroup(kind="grpc")
    builder.build(loader.load(), group)
    calls = []
    original = snapshot_builder.service_resources
    monkeypatch.setattr(snapshot_builder, "service_resources",
                        lambda m, s, g: calls.append(s.name) or original(m, s, g))
    (config / "routes.yaml").write_text(mesh_gen.route_yaml(50))
    builder.build(loader.load(), group)
    assert calls == ["svc-0"]  # only the Service whose route changed
