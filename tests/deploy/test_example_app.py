"""deploy/example-app: a workload wired for meshlib with nothing but its Deployment.
Its env is what ``MeshSettings.from_env`` reads, and gives the settings a pod needs (the
control plane's Service and TLS name, the mounted root, the projected token, the
pod's identity); the volumes behind those paths are the root ConfigMap and a
short-lived token for audience ``meshlib``."""

from __future__ import annotations

import importlib.util
import posixpath
from types import ModuleType

import pytest

from meshlib import MeshSettings
from tests.deploy.manifests import (
    CONTROL_PLANE,
    DEPLOY,
    SYSTEM_NAMESPACE,
    Obj,
    RecordingEnv,
    check_restricted,
    container,
    container_env,
    find,
    references,
    render,
)

CONTROL_PLANE_HOST = f"{CONTROL_PLANE}.{SYSTEM_NAMESPACE}.svc"
POD_NAME = "cart-6d4f9c7b8-x2x9q"


def load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_app", DEPLOY / "example-app"
                                                  / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def objects() -> list[Obj]:
    return render("example-app")


@pytest.fixture
def deployment(objects: list[Obj]) -> Obj:
    return find(objects, "Deployment", "cart")


def a_pod(deployment: Obj) -> Obj:
    """A pod of ``deployment`` as the API server makes it (name and namespace set)."""
    pod = {"metadata": {"name": POD_NAME, "namespace": deployment["metadata"]["namespace"]},
           "spec": deployment["spec"]["template"]["spec"]}
    return pod


def pod_env(deployment: Obj) -> dict[str, str]:
    return container_env(a_pod(deployment), container(deployment))


def mounted(deployment: Obj, path: str) -> tuple[Obj, Obj]:
    """The volume mount holding file ``path``, and its volume."""
    directory = posixpath.dirname(path)
    (mount,) = [m for m in container(deployment)["volumeMounts"]
                if m["mountPath"] == directory]
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == mount["name"]]
    return mount, volume


def test_every_variable_is_one_from_env_reads(deployment: Obj) -> None:
    """Each variable the Deployment sets is read by ``MeshSettings.from_env`` (asked
    of the environment it is given), or feeds one through ``$(VAR)``."""
    env = RecordingEnv(pod_env(deployment))
    MeshSettings.from_env(environ=env)
    declared = [var["name"] for var in container(deployment)["env"]]
    referenced = {name for var in container(deployment)["env"]
                  for name in references(var.get("value", ""))}
    assert referenced == {"POD_NAME", "POD_NAMESPACE"}
    unread = [name for name in declared if name not in env.asked and name not in referenced]
    assert unread == []
    assert {n for n in declared if n.startswith("MESHLIB_")} <= env.asked


def test_from_env_gives_the_pods_settings(deployment: Obj) -> None:
    settings = MeshSettings.from_env(environ=pod_env(deployment))
    assert settings == MeshSettings(
        xds_address=f"{CONTROL_PLANE_HOST}:15010",
        ca_address=f"{CONTROL_PLANE_HOST}:15012",
        ca_root="/etc/meshlib/ca-root/root-cert.pem",
        token_file="/var/run/secrets/meshlib/token",
        service="cart", service_account="cart", namespace="shop",
        node_id=f"{POD_NAME}.shop")
    assert settings.has_identity
    assert settings.certificate_address == f"{CONTROL_PLANE_HOST}:15012"


def test_addresses_are_the_control_planes_service_and_tls_name(deployment: Obj) -> None:
    settings = MeshSettings.from_env(environ=pod_env(deployment))
    control_plane = render("base")
    service = find(control_plane, "Service", CONTROL_PLANE)
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert settings.xds_address == f"{CONTROL_PLANE_HOST}:{ports['grpc-xds']}"
    assert settings.ca_address == f"{CONTROL_PLANE_HOST}:{ports['grpc-ca']}"
    # The host the workload dials is a name on the control plane's serving certificate.
    args = container(find(control_plane, "Deployment", CONTROL_PLANE))["args"]
    assert f"--tls-name={CONTROL_PLANE_HOST}" in args


def test_ca_root_is_the_root_configmap(deployment: Obj) -> None:
    path = pod_env(deployment)["MESHLIB_CA_ROOT"]
    mount, volume = mounted(deployment, path)
    assert mount.get("readOnly") is True
    assert volume["configMap"]["name"] == "meshlib-ca-root"
    assert volume["configMap"].get("optional") is not True  # the pod waits for the root
    assert volume["configMap"]["items"] == [{"key": "root-cert.pem",
                                             "path": posixpath.basename(path)}]


def test_token_is_projected_for_the_meshlib_audience(deployment: Obj) -> None:
    path = pod_env(deployment)["MESHLIB_TOKEN_FILE"]
    mount, volume = mounted(deployment, path)
    assert mount.get("readOnly") is True
    (source,) = volume["projected"]["sources"]
    assert source == {"serviceAccountToken": {
        "audience": "meshlib", "expirationSeconds": 3600, "path": posixpath.basename(path)}}


def test_identity_is_the_pods_service_account(objects: list[Obj], deployment: Obj) -> None:
    pod = deployment["spec"]["template"]["spec"]
    (var,) = [v for v in container(deployment)["env"]
              if v["name"] == "MESHLIB_SERVICE_ACCOUNT"]
    assert var["valueFrom"] == {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}
    account = find(objects, "ServiceAccount", pod["serviceAccountName"])
    # No Kubernetes API token in the pod: the projected meshlib token is its only one.
    assert pod["automountServiceAccountToken"] is False
    assert account["automountServiceAccountToken"] is False
    service = find(objects, "Service", "cart")
    assert service["metadata"]["annotations"]["meshlib.dev/service-account"] \
        == account["metadata"]["name"]


def test_pod_is_restricted_and_read_only(deployment: Obj) -> None:
    check_restricted(deployment["spec"]["template"]["spec"])
    assert container(deployment)["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_program_is_app_py_from_the_meshlib_image(objects: list[Obj],
                                                       deployment: Obj) -> None:
    c = container(deployment)
    control_plane_image = container(find(render("base"), "Deployment", CONTROL_PLANE))["image"]
    assert c["image"] == control_plane_image
    assert c["command"] == ["python", "/app/app.py"]
    _, volume = mounted(deployment, "/app/app.py")
    configmap = find(objects, "ConfigMap", volume["configMap"]["name"])
    assert configmap["data"]["app.py"] == (DEPLOY / "example-app" / "app.py").read_text()
    app = load_app()
    assert callable(app.main)
    (port,) = c["ports"]
    assert port["containerPort"] == app.DEFAULT_PORT


def test_service_route_and_policies_point_at_the_app(objects: list[Obj],
                                                     deployment: Obj) -> None:
    service = find(objects, "Service", "cart")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == container(deployment)["ports"][0]["name"]
    assert port["appProtocol"] == "grpc"
    route = find(objects, "GRPCRoute", "cart")
    assert route["spec"]["parentRefs"] == [{"group": "", "kind": "Service", "name": "cart",
                                            "port": port["port"]}]
    for rule in route["spec"]["rules"]:
        for backend in rule["backendRefs"]:
            assert find(objects, "Service", backend["name"])
    for kind in ("TrafficPolicy", "AccessPolicy"):
        assert find(objects, kind, "cart")["spec"]["targetRef"]["name"] == "cart"
    access = find(objects, "AccessPolicy", "cart")["spec"]
    assert access["mtls"]["mode"] == "STRICT"
    assert access["rules"][0]["from"] == [{"namespaces": ["shop"]}]
