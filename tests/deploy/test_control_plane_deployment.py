"""The control plane's Deployment, Service and PodDisruptionBudget in the base and each
overlay: the arguments meshctl takes, probes on the admin port, a locked-down
securityContext (the "restricted" Pod Security Standard its namespace enforces),
resources, replicas and spreading, and ports that agree everywhere."""

from __future__ import annotations

import tomllib

import pytest

from meshctl.cli import build_parser
from tests.deploy.manifests import (
    CONTROL_PLANE,
    CONTROL_PLANE_KUSTOMIZATIONS,
    ROOT,
    SYSTEM_NAMESPACE,
    Obj,
    check_restricted,
    container,
    find,
    render,
)

PORTS = {"grpc-xds": 15010, "grpc-ca": 15012, "http-admin": 15014}
ARGS = ["control-plane", "--kubernetes", "--xds-address=0.0.0.0:15010",
        "--ca-address=0.0.0.0:15012", "--admin-address=0.0.0.0:15014",
        "--tls-name=meshlib-control-plane.meshlib-system.svc",
        "--tls-name=meshlib-control-plane.meshlib-system.svc.cluster.local"]
RUN_AS = 10001  # the Dockerfile's USER (tests/deploy/test_dockerfile.py)
REPLICAS = {"base": 2, "overlays/dev": 1, "overlays/production": 3}
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
@pytest.fixture(params=CONTROL_PLANE_KUSTOMIZATIONS)
def path(request: pytest.FixtureRequest) -> str:
    return request.param


def deployment_of(path: str) -> Obj:
    return find(render(path), "Deployment", CONTROL_PLANE)


def test_arguments(path: str) -> None:
    args = container(deployment_of(path))["args"]
    assert args == (["--verbose", *ARGS] if path == "overlays/dev" else ARGS)
    parsed = build_parser().parse_args(args)  # the flags meshctl really has
    assert parsed.command == "control-plane" and parsed.kubernetes
    assert parsed.verbose == (path == "overlays/dev")
    assert (parsed.ca_dir, parsed.token_file, parsed.insecure) == (None, None, False)
    assert [parsed.xds_address, parsed.ca_address, parsed.admin_address] == [
        ("0.0.0.0", PORTS[name]) for name in ("grpc-xds", "grpc-ca", "http-admin")]
    assert "meshlib-control-plane.meshlib-system.svc" in parsed.tls_name


def test_security_context(path: str) -> None:
    pod = deployment_of(path)["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert container(deployment_of(path))["securityContext"] == {
        "runAsNonRoot": True, "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False, "privileged": False,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    check_restricted(pod)
    namespace = find(render(path), "Namespace", SYSTEM_NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] \
        == "restricted"


def test_probes_on_the_admin_port(path: str) -> None:
    c = container(deployment_of(path))
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-admin"}
    # A slow list at start makes the pod unready, never killed: liveness is /healthz.
    assert c["livenessProbe"]["failureThreshold"] * c["livenessProbe"]["periodSeconds"] >= 30


def test_ports_agree_everywhere(path: str) -> None:
    objects = render(path)
    deployment = find(objects, "Deployment", CONTROL_PLANE)
    c = container(deployment)
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == PORTS
    service = find(objects, "Service", CONTROL_PLANE)
    assert service["spec"]["type"] == "ClusterIP"
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        name: (number, name) for name, number in PORTS.items()}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (
        str(PORTS["http-admin"]), "/metrics")


def test_downward_api_env(path: str) -> None:
    env = {e["name"]: e for e in container(deployment_of(path))["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}}


def test_read_only_root_has_a_writable_tmp(path: str) -> None:
    deployment = deployment_of(path)
    mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_resources(path: str) -> None:
    resources = container(deployment_of(path))["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    if path == "overlays/production":
        assert resources["requests"] == resources["limits"]  # Guaranteed QoS


def test_image_is_this_version(path: str) -> None:
    c = container(deployment_of(path))
    assert c["image"] == f"meshlib/meshlib:{VERSION}"
    assert c["imagePullPolicy"] == "IfNotPresent"


def test_replicas_rollout_and_spreading(path: str) -> None:
    deployment = deployment_of(path)
    spec = deployment["spec"]
    assert spec["replicas"] == REPLICAS[path]
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pod = spec["template"]["spec"]
    labels = spec["selector"]["matchLabels"]
    (term,) = pod["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == labels
    spread = {c["topologyKey"]: c for c in pod.get("topologySpreadConstraints", [])}
    if path == "overlays/production":
        assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
        assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
        for constraint in spread.values():
            assert constraint["labelSelector"]["matchLabels"] == labels
    else:
        assert spread == {}


def test_disruption_budget(path: str) -> None:
    objects = render(path)
    deployment = find(objects, "Deployment", CONTROL_PLANE)
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    if path == "overlays/dev":
        assert budgets == []  # one replica: minAvailable 1 would block every node drain
        return
    (budget,) = budgets
    replicas = deployment["spec"]["replicas"]
    assert 1 <= budget["spec"]["minAvailable"] < replicas  # a drain can always proceed
    assert budget["spec"]["minAvailable"] == (2 if path == "overlays/production" else 1)
    assert budget["spec"]["selector"]["matchLabels"] == \
        deployment["spec"]["selector"]["matchLabels"]
