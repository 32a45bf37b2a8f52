"""The incremental SnapshotBuilder gives exactly what translating the whole model gives."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks import mesh_gen
from xds_server import snapshot_builder
from xds_server.cache import Snapshot
from xds_server.node import NodeGroup
from xds_server.resources import LISTENER
from xds_server.snapshot_builder import SnapshotBuilder
from xds_server.sources.yaml_loader import ConfigLoader
from xds_server.translate import build_resources

ROOT = Path(__file__).resolve().parents[2]

GROUPS = [NodeGroup(kind="grpc"), NodeGroup(kind="envoy", outbound_port=15001),
          NodeGroup(kind="grpc", namespace="other"), NodeGroup(kind="grpc", tls=True),
          NodeGroup(kind="meshlib", tls=True)]


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


def access_policy_yaml(target: str, mode: str | None, rules: str = "") -> str:
    mtls = f"  mtls: {{mode: {mode}}}\n" if mode else ""
    return f"""---
apiVersion: meshlib.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: {target}, namespace: default}}
spec:
  targetRef: {{kind: Service, name: {target}}}
{mtls}{rules}"""


def shared_endpoint_yaml(name: str, address: str, accounts: str = "") -> str:
    """A Service whose endpoint is ``address`` (another Service's too)."""
    notes = f"meshlib.dev/service-accounts: \"{accounts}\"" if accounts else ""
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default, annotations: {{{notes}}}}}
spec:
  ports: [{{name: grpc, port: 50051, appProtocol: grpc}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: grpc, port: 8080}}]
endpoints: [{{addresses: ["{address}"]}}]
"""


DENY = "  rules: [{action: DENY, from: [{serviceAccounts: [intruder]}]}]\n"
ALLOW = "  rules: [{action: ALLOW, from: [{namespaces: [\"prod-*\"]}]}]\n"


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.key)
def test_matches_whole_translation_across_access_policy_edits(tmp_path, group):
    config = tmp_path / "mesh"
    mesh_gen.write(config, services=12, endpoints=2)
    loader = ConfigLoader(config)
    builder = SnapshotBuilder()
    policies = config / "access.yaml"
    extra = config / "extra.yaml"

    def same(text: str, more: str = "") -> None:
        policies.write_text(text)
        extra.write_text(more)
        model = loader.load()
        assert_same(builder.build(model, group), whole(model, group))

    same("")
    same(access_policy_yaml("svc-1", "STRICT"))  # a mode on a route backend
    same(access_policy_yaml("svc-1", "STRICT", DENY))  # rules: RBAC on its listeners
    same(access_policy_yaml("svc-1", "DISABLE", DENY) + access_policy_yaml("svc-0", None, ALLOW))
    # A Service sharing svc-1's endpoint: their listener merges both (strictest mode).
    same(access_policy_yaml("svc-1", "DISABLE", DENY) + access_policy_yaml("twin", "STRICT"),
         shared_endpoint_yaml("twin", "10.0.1.1"))
    same(access_policy_yaml("svc-1", "DISABLE", DENY),  # its identities: the annotation
         shared_endpoint_yaml("twin", "10.0.1.1", accounts="a,b"))
    same("")  # every policy gone


def test_an_access_policy_edit_retranslates_its_service_and_listeners(tmp_path, monkeypatch):
    config = tmp_path / "mesh"
    mesh_gen.write(config, services=20, endpoints=2)
    loader = ConfigLoader(config)
    builder = SnapshotBuilder()
    group = NodeGroup(kind="grpc", tls=True)
    before = builder.build(loader.load(), group)
    translated, listeners = [], []
    original = snapshot_builder.service_resources
    monkeypatch.setattr(snapshot_builder, "service_resources",
                        lambda m, s, g: translated.append(s.name) or original(m, s, g))
    build_listener = snapshot_builder.grpc_server_listener
    monkeypatch.setattr(snapshot_builder, "grpc_server_listener",
                        lambda a, p, sec, tls, hcm=None: listeners.append(a)
                        or build_listener(a, p, sec, tls=tls, hcm=hcm))
    (config / "access.yaml").write_text(access_policy_yaml("svc-3", "STRICT", DENY))
    after = builder.build(loader.load(), group)
    assert translated == ["svc-3"]  # its Clusters' mTLS
    # Its endpoints' listeners, and the any-address ones every Service shares.
    assert sorted(listeners) == ["0.0.0.0", "10.0.3.1", "10.0.3.2", "::"]
    changed = {name for name, res in after.resources[LISTENER].items()
               if before.resources[LISTENER][name].version != res.version}
    assert changed == {f"grpc/server?xds.resource.listening_address={a}:8080"
                       for a in ("0.0.0.0", "10.0.3.1", "10.0.3.2", "[::]")}
