"""What the tests of deploy/ share: kustomizations rendered by the real ``kubectl
kustomize``, lookups in them, the CRD schemas as validators, and kubelet's expansion of a
container's env."""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONTROL_PLANE = "meshlib-control-plane"
SYSTEM_NAMESPACE = "meshlib-system"
# Every kustomization a user applies; the control plane's first.
CONTROL_PLANE_KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/production")
KUSTOMIZATIONS = ("crds", *CONTROL_PLANE_KUSTOMIZATIONS, "example-app")
MESH_KINDS = ("Service", "EndpointSlice", "GRPCRoute", "HTTPRoute", "TrafficPolicy",
              "AccessPolicy", "MeshConfig")

Obj = dict[str, Any]


def kubectl() -> str:
    """The real kubectl (v1.32, kustomize v5.5 on these machines)."""
    found = shutil.which("kubectl") or "/usr/bin/kubectl"
    assert os.access(found, os.X_OK), "the deploy tests need kubectl (apt install kubectl)"
    return found


@functools.cache
def _rendered(path: str) -> tuple[Obj, ...]:
    done = subprocess.run([kubectl(), "kustomize", str(DEPLOY / path)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, f"kubectl kustomize deploy/{path}: {done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def render(path: str) -> list[Obj]:
    """``kubectl kustomize deploy/<path>``: the objects, each a fresh copy."""
    return copy.deepcopy(list(_rendered(path)))


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    """The one object of ``kind`` named ``name``."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def kinds(objects: list[Obj]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def container(deployment: Obj, name: str | None = None) -> Obj:
    """A Deployment's container (its only one unless ``name``)."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    if name is None:
        assert len(containers) == 1
        return containers[0]
    (found,) = [c for c in containers if c["name"] == name]
    return found


RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def check_restricted(pod: Obj) -> None:
    """``pod`` (a pod spec) meets the "restricted" Pod Security Standard (v1.30), which
    the namespaces of deploy/ enforce: the checks the API server would make."""
    context = pod.get("securityContext", {})
    assert not (pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"))
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, volume
    for c in pod["containers"] + pod.get("initContainers", []):
        own = c.get("securityContext", {})
        assert own.get("privileged") is not True, c["name"]
        assert own.get("allowPrivilegeEscalation") is False, c["name"]
        assert own.get("runAsNonRoot", context.get("runAsNonRoot")) is True, c["name"]
        assert own.get("runAsUser", context.get("runAsUser")) != 0, c["name"]
        seccomp = own.get("seccompProfile", context.get("seccompProfile", {}))
        assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), c["name"]
        assert own["capabilities"]["drop"] == ["ALL"], c["name"]
        assert set(own["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}, c["name"]
        assert not any("hostPort" in p for p in c.get("ports", [])), c["name"]


# ------------------------------------------------------------------------ RBAC

RBAC_ANY = None  # a grant on any object of the resource (no resourceNames)
Grant = tuple[str, str, str, str | None]  # (apiGroup, resource, verb, name or RBAC_ANY)


def grants(role: Obj) -> set[Grant]:
    """Every (group, resource, verb, name) a Role or ClusterRole allows."""
    out: set[Grant] = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [RBAC_ANY]:
                        out.add((group, resource, verb, name))
    return out


# ------------------------------------------------------------------------ CRD schemas


@functools.cache
def _crds() -> dict[tuple[str, str], Obj]:
    out = {}
    for crd in _rendered("crds"):
        for version in crd["spec"]["versions"]:
            api_version = f"{crd['spec']['group']}/{version['name']}"
            out[(api_version, crd["spec"]["names"]["kind"])] = version["schema"]
    return out


def crd_kinds() -> set[tuple[str, str]]:
    """``(apiVersion, kind)`` of every kind deploy/crds defines."""
    return set(_crds())


def _strict(schema: Obj) -> Obj:
    """An OpenAPI v3 schema as JSON Schema that refuses unknown fields, as the API
    server's structural pruning and ``kubectl apply --validate=strict`` do."""
    schema = copy.deepcopy(schema)

    def walk(node: Obj, path: str) -> None:
        if (node.get("type") == "object" and "properties" in node and path != ".metadata"
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node.setdefault("additionalProperties", False)
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema, "")
    return schema


def crd_errors(obj: Obj) -> list[str]:
    """Where ``obj`` breaks the openAPIV3Schema of its CRD in deploy/crds."""
    schema = _crds()[(obj["apiVersion"], obj["kind"])]["openAPIV3Schema"]
    validator = jsonschema.Draft4Validator(_strict(schema))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(obj)]


# ------------------------------------------------------------------------ kubelet's env

_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def field_ref(pod: Obj, path: str) -> str:
    """The value of a downward-API ``fieldRef`` for ``pod`` (the fields used here)."""
    values = {"metadata.name": pod["metadata"]["name"],
              "metadata.namespace": pod["metadata"]["namespace"],
              "spec.serviceAccountName": pod["spec"]["serviceAccountName"]}
    assert path in values, f"fieldRef {path}: not one this test knows"
    return values[path]


def container_env(pod: Obj, container: Obj) -> dict[str, str]:
    """The environment kubelet gives ``container`` of ``pod``: ``value`` with each
    ``$(VAR)`` of a variable defined earlier expanded (an unknown one stays as
    written), ``valueFrom.fieldRef`` from the pod."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            (source,) = var["valueFrom"]
            assert source == "fieldRef", f"{var['name']}: valueFrom {source} not expected"
            env[var["name"]] = field_ref(pod, var["valueFrom"]["fieldRef"]["fieldPath"])
        else:
            env[var["name"]] = _REFERENCE.sub(
                lambda m: env.get(m.group(1), m.group(0)), var.get("value", ""))
    return env


def references(value: str) -> list[str]:
    """The ``$(VAR)`` names in an env value."""
    return _REFERENCE.findall(value)


class RecordingEnv(Mapping[str, str]):
    """A mapping that records every key looked up in it: which variables a reader
    (``MeshSettings.from_env``) asks for."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return key in self._values

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return self._values.get(key, default)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("from_env should look variables up by name, not list them")

    def __len__(self) -> int:
        return len(self._values)
