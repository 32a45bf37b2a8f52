"""The control plane's RBAC is exactly what issue 13 asks for, and no more: read what
it models, write route and policy status, the root ConfigMap, TokenReviews; in its own
namespace, its Lease and its CA Secret. Named objects wherever RBAC can name them."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import (
    CONTROL_PLANE,
    CONTROL_PLANE_KUSTOMIZATIONS,
    SYSTEM_NAMESPACE,
    Grant,
    Obj,
    find,
    grants,
    render,
)
from tests.deploy.manifests import RBAC_ANY as ANY

READ = ("get", "list", "watch")
STATUS = ("update", "patch")
GATEWAY = "gateway.networking.k8s.io"
MESH = "meshlib.dev"
CA_SECRET = "meshlib-ca"
ROOT_CONFIGMAP = "meshlib-ca-root"
LEASE = CONTROL_PLANE


def _table(rows: list[tuple[str, list[str], tuple[str, ...], str | None]]) -> set[Grant]:
    return {(group, resource, verb, name)
            for group, resources, verbs, name in rows
            for resource in resources for verb in verbs}


CLUSTER_GRANTS = _table([
    ("", ["services", "namespaces"], READ, ANY),
    ("discovery.k8s.io", ["endpointslices"], READ, ANY),
    (GATEWAY, ["grpcroutes", "httproutes"], READ, ANY),
    (GATEWAY, ["grpcroutes/status", "httproutes/status"], STATUS, ANY),
    (MESH, ["trafficpolicies", "accesspolicies", "meshconfigs"], READ, ANY),
    (MESH, ["trafficpolicies/status", "accesspolicies/status", "meshconfigs/status"], STATUS,
     ANY),
    ("", ["configmaps"], ("get", "list", "watch", "update", "patch"), ROOT_CONFIGMAP),
    ("", ["configmaps"], ("create",), ANY),  # RBAC cannot name what create makes
    ("authentication.k8s.io", ["tokenreviews"], ("create",), ANY),
])
NAMESPACE_GRANTS = _table([
    ("coordination.k8s.io", ["leases"], ("get", "update"), LEASE),
    ("coordination.k8s.io", ["leases"], ("create",), ANY),
    ("", ["secrets"], ("get", "update"), CA_SECRET),
    ("", ["secrets"], ("create",), ANY),
])


@pytest.fixture(params=CONTROL_PLANE_KUSTOMIZATIONS)
def objects(request: pytest.FixtureRequest) -> list[Obj]:
    return render(request.param)


def test_cluster_role_grants_exactly_what_the_issue_says(objects: list[Obj]) -> None:
    role = find(objects, "ClusterRole", CONTROL_PLANE)
    got = grants(role)
    assert got - CLUSTER_GRANTS == set(), "more than asked"
    assert CLUSTER_GRANTS - got == set(), "less than asked"


def test_namespaced_role_grants_its_lease_and_ca_secret(objects: list[Obj]) -> None:
    role = find(objects, "Role", CONTROL_PLANE)
    assert role["metadata"]["namespace"] == SYSTEM_NAMESPACE
    got = grants(role)
    assert got - NAMESPACE_GRANTS == set(), "more than asked"
    assert NAMESPACE_GRANTS - got == set(), "less than asked"


def test_no_wildcards_no_urls_no_escalation(objects: list[Obj]) -> None:
    """No "*", no non-resource URLs, no aggregation; nothing deletes, and nothing may
    escalate, bind or impersonate."""
    for kind in ("ClusterRole", "Role"):
        role = find(objects, kind, CONTROL_PLANE)
        assert "aggregationRule" not in role
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), (kind, rule)
                assert not any("*" in value for value in rule.get(field, [])), (kind, rule)
        verbs = {verb for _, _, verb, _ in grants(role)}
        assert verbs <= {"get", "list", "watch", "create", "update", "patch"}, verbs


def test_secrets_only_in_its_namespace_and_only_the_ca(objects: list[Obj]) -> None:
    cluster = grants(find(objects, "ClusterRole", CONTROL_PLANE))
    assert not {g for g in cluster if g[1] in ("secrets", "pods", "serviceaccounts/token")}
    readable = {(g[1], g[3]) for g in grants(find(objects, "Role", CONTROL_PLANE))
                if g[2] in READ}
    assert readable == {("leases", LEASE), ("secrets", CA_SECRET)}


def test_bindings_give_the_roles_to_the_control_planes_service_account(
        objects: list[Obj]) -> None:
    subject = {"kind": "ServiceAccount", "name": CONTROL_PLANE, "namespace": SYSTEM_NAMESPACE}
    for binding_kind, role_kind in (("ClusterRoleBinding", "ClusterRole"),
                                    ("RoleBinding", "Role")):
        binding = find(objects, binding_kind, CONTROL_PLANE)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                      "kind": role_kind, "name": CONTROL_PLANE}
        assert binding["subjects"] == [subject]
    assert find(objects, "ServiceAccount", CONTROL_PLANE)["metadata"]["namespace"] \
        == SYSTEM_NAMESPACE
    pod = find(objects, "Deployment", CONTROL_PLANE)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == CONTROL_PLANE
    assert pod.get("automountServiceAccountToken", True)  # its API token: in-cluster config


def test_mesh_resources_are_the_crds_plurals_with_status() -> None:
    """The meshlib.dev resources named in the ClusterRole exist in deploy/crds, and
    those whose status it writes have the status subresource."""
    objects = render("base")
    plurals = {}
    for crd in (o for o in objects if o["kind"] == "CustomResourceDefinition"):
        (version,) = crd["spec"]["versions"]
        plurals[crd["spec"]["names"]["plural"]] = "status" in version.get("subresources", {})
    for group, resource, _, _ in grants(find(objects, "ClusterRole", CONTROL_PLANE)):
        if group == MESH:
            plural, _, sub = resource.partition("/")
            assert plural in plurals, resource
            assert sub in ("", "status") and (not sub or plurals[plural]), resource
