"""Every kustomization in deploy/ renders with the real ``kubectl kustomize``, and
every object it renders is valid: Kubernetes objects against the API schemas of
Kubernetes 1.30 to the newest kubernetes-validate ships (strict: unknown fields are
errors), meshlib.dev objects against their CRD's openAPIV3Schema, mesh objects against
the control plane's own validation (what ``meshctl check`` says)."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions
from packaging.version import Version

from tests.deploy.manifests import (
    CONTROL_PLANE,
    CONTROL_PLANE_KUSTOMIZATIONS,
    DEPLOY,
    KUSTOMIZATIONS,
    MESH_KINDS,
    SYSTEM_NAMESPACE,
    crd_errors,
    crd_kinds,
    kinds,
    render,
)
from xds_server.sources import parse_objects

OLDEST = Version("1.30")
# Every Kubernetes minor version from 1.30 on that kubernetes-validate has schemas for.
VERSIONS = sorted({f"{v.major}.{v.minor}" for v in map(Version,
                                                        all_versions())
                   if v >= OLDEST}, key=Version)
CONTROL_PLANE_KINDS = sorted([
    "Namespace", "CustomResourceDefinition", "CustomResourceDefinition",
    "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
    "Role", "RoleBinding", "Deployment", "Service", "PodDisruptionBudget"])


def test_schemas_cover_1_30_to_at_least_1_33() -> None:
    assert VERSIONS[0] == "1.30"
    assert Version(VERSIONS[-1]) >= Version("1.33"), VERSIONS


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_renders(path: str) -> None:
    assert render(path)


def test_what_the_control_plane_kustomizations_hold() -> None:
    assert kinds(render("base")) == CONTROL_PLANE_KINDS
    assert kinds(render("overlays/production")) == CONTROL_PLANE_KINDS
    # One replica: a PodDisruptionBudget of minAvailable 1 would block every drain.
    assert kinds(render("overlays/dev")) == [k for k in CONTROL_PLANE_KINDS
                                             if k != "PodDisruptionBudget"]
    assert kinds(render("crds")) == ["CustomResourceDefinition"] * 3


@pytest.mark.parametrize("path", CONTROL_PLANE_KUSTOMIZATIONS)
def test_namespaced_objects_are_in_meshlib_system(path: str) -> None:
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole",
                      "ClusterRoleBinding"}
    for obj in render(path):
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_scoped:
            assert namespace is None, obj["metadata"]
        else:
            assert namespace == SYSTEM_NAMESPACE, obj["metadata"]
            assert obj["metadata"]["name"] == CONTROL_PLANE, obj["metadata"]


def test_example_app_objects_are_in_shop() -> None:
    for obj in render("example-app"):
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == "shop"
        else:
            assert obj["metadata"]["namespace"] == "shop", obj["metadata"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_kubernetes_objects_validate_strictly(path: str, version: str) -> None:
    checked = 0
    for obj in render(path):
        if (obj["apiVersion"], obj["kind"]) in crd_kinds() or obj["apiVersion"].startswith(
                "gateway.networking.k8s.io/"):
            continue  # custom resources: the CRD schemas below
        where = f"deploy/{path}: {obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path_in_obj = ".".join(map(str, err.absolute_path))
            pytest.fail(f"{where} (Kubernetes {version}): {path_in_obj}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError as err:
            pytest.fail(f"{where}: {err.message}")
        checked += 1
    assert checked


def test_a_wrong_field_is_caught() -> None:
    """The validation above does find errors: a typo and a wrong type."""
    (deployment,) = [o for o in render("base") if o["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"][
        "paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(deployment, "1.30", strict=True)
    (service,) = [o for o in render("base") if o["kind"] == "Service"]
    service["spec"]["ports"][0]["port"] = "15010"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, "1.30", strict=True)


def test_custom_resources_validate_against_the_crds() -> None:
    resources = [o for o in render("example-app") if (o["apiVersion"], o["kind"])
                 in crd_kinds()]
    assert sorted(o["kind"] for o in resources) == ["AccessPolicy", "TrafficPolicy"]
    for obj in resources:
        assert crd_errors(obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"


def test_the_crd_validation_catches_errors() -> None:
    (policy,) = [o for o in render("example-app") if o["kind"] == "AccessPolicy"]
    policy["spec"]["mtls"]["mode"] = "STRICTER"
    policy["spec"]["mtls"]["extra"] = True
    errors = crd_errors(policy)
    assert any("spec.mtls.mode" in e and "STRICTER" in e for e in errors), errors
    assert any("extra" in e for e in errors), errors


def test_mesh_objects_pass_the_control_planes_validation() -> None:
    """What ``meshctl check`` (and the control plane, from the API server) says of the
    example's Service, GRPCRoute, TrafficPolicy and AccessPolicy: no problem, and
    the route and policies attach to the Service."""
    objects = [o for o in render("example-app") if o["kind"] in MESH_KINDS]
    assert sorted(o["kind"] for o in objects) == ["AccessPolicy", "GRPCRoute", "Service",
                                                   "TrafficPolicy"]
    model, problems = parse_objects(("deploy/example-app", o) for o in objects)
    assert [str(p) for p in problems] == []
    (service,) = model.services
    assert (service.namespace, service.name) == ("shop", "cart")
    assert len(model.routes_for(service)) == 1
    assert len(model.traffic_policies) == len(model.access_policies) == 1


def test_the_crds_kustomization_lists_every_crd() -> None:
    files = sorted(p.name for p in (DEPLOY / "crds").glob("*.yaml"))
    assert files and len(render("crds")) == len(files)
    kustomization = yaml.safe_load((DEPLOY / "crds" / "kustomization.yml").read_text())
    assert sorted(kustomization["resources"]) == files
