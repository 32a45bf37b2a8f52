"""The fake API server, driven by the real ``kubectl`` (v1.32) with default flags:
discovery, OpenAPI v3 (field validation, strategic merge patch keys), client-side
apply with its last-applied annotation, server-side apply, create token, get --watch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kube import FakeApiServer
from tests.kube.kubectl import Kubectl, KubectlError

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "deploy" / "crds"
EXAMPLES = ROOT / "examples" / "mesh"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_apply_crds_then_the_example_mesh(fake_kube: FakeApiServer, kubectl: Kubectl) -> None:
    out = kubectl("apply", "-k", str(CRDS)).stdout
    assert "customresourcedefinition.apiextensions.k8s.io/trafficpolicies.meshlib.dev created" \
        in out
    out = kubectl("apply", "-f", str(EXAMPLES)).stdout
    for line in ("service/reviews created", "endpointslice.discovery.k8s.io/reviews-50061 created",
                 "grpcroute.gateway.networking.k8s.io/reviews created",
                 "trafficpolicy.meshlib.dev/reviews created",
                 "accesspolicy.meshlib.dev/reviews created", "meshconfig.meshlib.dev/mesh created"):
        assert line in out
    # kubectl validated against the server (fieldValidation=Strict), found everything
    # in discovery, and created each object once.
    assert all(r.query.get("fieldValidation") == "Strict"
               for r in fake_kube.requests if r.verb == "create")
    assert fake_kube.count("create", "trafficpolicies") == 2
    names = kubectl("get", "tp", "-o", "name").stdout.split()
    assert names == ["trafficpolicy.meshlib.dev/reviews", "trafficpolicy.meshlib.dev/reviews-v1"]
    svc = kubectl.json("get", "svc", "reviews")
    assert json.loads(svc["metadata"]["annotations"][LAST_APPLIED])["kind"] == "Service"

    # Applying the same files again changes nothing (routes are patched with what
    # the server defaulted, and that write is a no-op, as on a real cluster).
    rv = fake_kube.resource_version
    out = kubectl("apply", "-f", str(EXAMPLES)).stdout
    assert "service/reviews unchanged" in out and "trafficpolicy.meshlib.dev/reviews unchanged" \
        in out
    assert fake_kube.resource_version == rv


def test_client_side_apply_of_a_change_is_a_patch(fake_kube: FakeApiServer, kubectl: Kubectl,
                                                  tmp_path: Path) -> None:
    kubectl("apply", "-k", str(CRDS))
    kubectl("apply", "-f", str(EXAMPLES / "services.yaml"), "-f", str(EXAMPLES / "policies.yaml"))
    policies = (EXAMPLES / "policies.yaml").read_text()
    services = (EXAMPLES / "services.yaml").read_text()
    assert "timeout: 2s" in policies and "      appProtocol: grpc     #" in services
    _write(tmp_path / "policies.yaml", policies.replace("timeout: 2s", "timeout: 3s"))
    _write(tmp_path / "services.yaml",
           services.replace("      appProtocol: grpc     #", "      appProtocol: http2 #", 1))
    fake_kube.reset_counts()

    out = kubectl("apply", "-f", str(tmp_path)).stdout
    assert "trafficpolicy.meshlib.dev/reviews configured" in out
    assert "service/reviews configured" in out and "service/reviews-v1 unchanged" in out
    patches = [r for r in fake_kube.requests if r.verb == "patch"]
    assert {r.resource for r in patches} == {"trafficpolicies", "services"}
    assert fake_kube.count("update") == 0

    tp = kubectl.json("get", "trafficpolicy", "reviews")
    assert tp["spec"]["timeout"] == "3s" and tp["metadata"]["generation"] == 2
    assert json.loads(tp["metadata"]["annotations"][LAST_APPLIED])["spec"]["timeout"] == "3s"
    (port,) = kubectl.json("get", "service", "reviews")["spec"]["ports"]
    # Strategic merge by port: the named targetPort and the defaulted protocol stay.
    assert port == {"name": "grpc", "port": 50051, "targetPort": "grpc", "protocol": "TCP",
                    "appProtocol": "http2"}


def test_server_side_apply_owns_and_removes_fields(fake_kube: FakeApiServer, kubectl: Kubectl,
                                                   tmp_path: Path) -> None:
    manifest = tmp_path / "cm.yaml"
    _write(manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n"
                     "  labels: {a: '1', b: '2'}\ndata: {one: '1', two: '2'}\n")
    assert "configmap/ssa serverside-applied" in kubectl("apply", "--server-side", "-f",
                                                         str(manifest)).stdout
    created = kubectl.json("get", "cm", "ssa", "--show-managed-fields")
    (entry,) = created["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"]) == ("kubectl", "Apply")
    assert "f:two" in entry["fieldsV1"]["f:data"]

    _write(manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n"
                     "  labels: {a: '1'}\ndata: {one: '1', three: '3'}\n")
    kubectl("apply", "--server-side", "-f", str(manifest))
    applied = kubectl.json("get", "cm", "ssa")
    assert applied["data"] == {"one": "1", "three": "3"}  # `two` was ours: removed
    assert applied["metadata"]["labels"] == {"a": "1"}
    assert any(r.query.get("fieldManager") == "kubectl" and r.verb == "patch"
               for r in fake_kube.requests)

    # Custom resources too (over objects kubectl created client-side before).
    kubectl("apply", "-k", str(CRDS))
    kubectl("apply", "-f", str(EXAMPLES / "policies.yaml"))
    out = kubectl("apply", "--server-side", "-f", str(EXAMPLES / "policies.yaml")).stdout
    assert "trafficpolicy.meshlib.dev/reviews serverside-applied" in out
    tp = kubectl.json("get", "tp", "reviews", "--show-managed-fields")
    # kubectl keeps the last-applied annotation up to date with an apply of its own.
    assert sorted(m["manager"] for m in tp["metadata"]["managedFields"]
                  if m["operation"] == "Apply") == ["kubectl", "kubectl-last-applied"]
    assert tp["metadata"]["generation"] == 1  # the same spec: no change


def test_get_grpcroute_yaml_shows_the_status_a_controller_wrote(fake_kube: FakeApiServer,
                                                                kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(EXAMPLES / "routes.yaml"))
    route = fake_kube.get("gateway.networking.k8s.io/v1", "GRPCRoute", "reviews")
    assert route is not None
    condition = {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound",
                 "message": "backendRefs[0]: Service default/reviews-v2 not found",
                 "observedGeneration": 1, "lastTransitionTime": "2025-01-01T00:00:00Z"}
    fake_kube.update_status({**route, "status": {"parents": [{
        "parentRef": {"group": "", "kind": "Service", "name": "reviews", "port": 50051},
        "controllerName": "meshlib.dev/control-plane", "conditions": [condition]}]}})
    shown = kubectl.yaml("get", "grpcroute", "reviews")
    (parent,) = shown["status"]["parents"]
    assert parent["controllerName"] == "meshlib.dev/control-plane"
    assert parent["conditions"] == [condition]


def test_delete_and_recreate(fake_kube: FakeApiServer, kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(EXAMPLES / "services.yaml"))
    out = kubectl("delete", "-f", str(EXAMPLES / "services.yaml")).stdout
    assert 'service "reviews" deleted' in out
    assert fake_kube.list("v1", "Service", "default") == []
    missing = kubectl("get", "svc", "reviews", check=False)
    assert missing.returncode == 1
    assert 'services "reviews" not found' in missing.stderr
    assert "service/reviews created" in kubectl("apply", "-f", str(EXAMPLES / "services.yaml")
                                                ).stdout


def test_refusals_read_as_on_a_cluster(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl("apply", "-k", str(CRDS))
    bad = _write(tmp_path / "bad.yaml", "apiVersion: meshlib.dev/v1alpha1\nkind: TrafficPolicy\n"
                 "metadata: {name: bad}\nspec:\n  loadBalancer: {type: RANDOM}\n")
    with pytest.raises(KubectlError) as invalid:
        kubectl("apply", "-f", str(bad))
    # kubectl lists the causes of the 422, as it does for a real server.
    assert invalid.value.stderr.startswith('The TrafficPolicy "bad" is invalid: \n'
                                           "* spec.targetRef: Required value\n"
                                           '* spec.loadBalancer.type: Unsupported value: '
                                           '"RANDOM": supported values: "ROUND_ROBIN"')

    typo = _write(tmp_path / "typo.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: t}\n"
                  "spec:\n  ports: [{port: 80}]\n  selecter: {app: t}\n")
    with pytest.raises(KubectlError) as strict:
        kubectl("apply", "-f", str(typo))
    assert 'strict decoding error: unknown field "spec.selecter"' in strict.value.stderr


def test_create_token_is_reviewed(fake_kube: FakeApiServer, kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "meshlib-system")
    kubectl("create", "serviceaccount", "meshlib-control-plane", "-n", "meshlib-system")
    token = kubectl("create", "token", "meshlib-control-plane", "-n", "meshlib-system",
                    "--audience", "meshlib", "--duration", "10m").stdout.strip()
    status = fake_kube.review(token, ["meshlib"])
    assert status["authenticated"] is True
    assert status["user"]["username"] == \
        "system:serviceaccount:meshlib-system:meshlib-control-plane"
    assert fake_kube.review(token, ["other"]).get("authenticated") is None


def test_get_watch_prints_changes(fake_kube: FakeApiServer, kubectl: Kubectl) -> None:
    kubectl("create", "configmap", "watched", "--from-literal=a=1")
    with kubectl.watch("get", "configmaps", "--watch", "-o", "name") as out:
        out.expect(r"^configmap/watched$")
        fake_kube.wait_for_watches("configmaps")
        kubectl("label", "configmap", "watched", "changed=yes")
        out.expect(r"^configmap/watched$")
        kubectl("create", "configmap", "another")
        out.expect(r"^configmap/another$")
