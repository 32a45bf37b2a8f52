"""The CRDs in deploy/crds agree with the parser: same fields, enums and bounds."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.xds_server.sources.source_builders import (
    FULL_TRAFFIC_SPEC,
    ROOT,
    lines,
    mesh_config,
    parse,
    policy,
    service,
)
from xds_server.sources import read_documents
from xds_server.sources.durations import DURATION_PATTERN
from xds_server.sources.parse_policies import (
    GRPC_STATUS_CODES,
    LOAD_BALANCER_TYPES,
    MTLS_MODES,
    RETRYABLE_STATUS_CODES,
)

CRD_DIR = ROOT / "deploy" / "crds"
KINDS = {
    "TrafficPolicy": ("trafficpolicies", "Namespaced", ["tp"]),
    "AccessPolicy": ("accesspolicies", "Namespaced", ["ap"]),
    "MeshConfig": ("meshconfigs", "Cluster", ["meshcfg"]),
}


def _crds() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        out[crd["spec"]["names"]["kind"]] = crd
    return out


CRDS = _crds()


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI schema as JSON Schema, rejecting unknown fields as
    `kubectl apply --validate=strict` does, and with list-type set as uniqueItems."""
    schema = copy.deepcopy(schema)

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object" and "properties" in node and path != "metadata":
            node["additionalProperties"] = False
        if node.get("x-kubernetes-list-type") == "set":
            node["uniqueItems"] = True
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}".lstrip("."))
        if "items" in node:
            walk(node["items"], path)

    walk(schema, "")
    return schema


def validator(kind: str) -> jsonschema.Draft4Validator:
    schema = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return jsonschema.Draft4Validator(_strict(schema))


def schema_errors(obj: dict[str, Any]) -> list[str]:
    return [e.message for e in validator(obj["kind"]).iter_errors(obj)]


# ------------------------------------------------------------------------ structure


@pytest.mark.parametrize("kind", list(KINDS))
def test_crd_structure(kind: str) -> None:
    plural, scope, short_names = KINDS[kind]
    crd = CRDS[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{plural}.meshlib.dev"
    spec = crd["spec"]
    assert spec["group"] == "meshlib.dev"
    assert spec["scope"] == scope
    assert spec["names"]["plural"] == plural
    assert spec["names"]["shortNames"] == short_names
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    assert len(columns) >= 3


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, child in node.get("properties", {}).items():
        out += _walk(child, f"{path}.{name}" if path else name)
    if "items" in node:
        out += _walk(node["items"], f"{path}[]")
    return out


def test_enums_and_duration_patterns_match_the_parser() -> None:
    tp = dict(_walk(CRDS["TrafficPolicy"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]))
    assert tp["spec.retries.retryOn[]"]["enum"] == list(RETRYABLE_STATUS_CODES)
    assert tp["spec.faultInjection.abort.grpcStatus"]["enum"] == list(GRPC_STATUS_CODES)
    assert tp["spec.loadBalancer.type"]["enum"] == list(LOAD_BALANCER_TYPES)
    for kind in ("AccessPolicy", "MeshConfig"):
        nodes = dict(_walk(CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]))
        assert nodes["spec.mtls.mode"]["enum"] == list(MTLS_MODES)
    durations = [
        (kind, path, node)
        for kind, crd in CRDS.items()
        for path, node in _walk(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        if "(h|m|s|ms)" in node.get("pattern", "")
    ]
    assert len(durations) == 10
    assert all(node["pattern"] == DURATION_PATTERN for _, _, node in durations)


def _skeleton(node: dict[str, Any]) -> Any:
    """Every property of the schema present, leaves null (null reads as absent)."""
    if "properties" in node:
        return {name: _skeleton(child) for name, child in node["properties"].items()}
    if node.get("type") == "array":
        return [_skeleton(node["items"])]
    return None


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_parser_knows_every_crd_field(kind: str) -> None:
    schema = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    obj = _skeleton(schema)
    obj.update(apiVersion="meshlib.dev/v1alpha1", kind=kind, metadata={"name": "x"})
    _, problems = parse(obj)
    assert [str(p) for p in problems if p.message.startswith("unknown field")] == []


# ----------------------------------------------------- examples and full specs validate


def _example_policies() -> list[dict[str, Any]]:
    documents, _ = read_documents(ROOT / "examples" / "mesh")
    return [d for _, d in documents if d.get("kind") in KINDS]


def test_examples_include_every_kind() -> None:
    assert sorted({d["kind"] for d in _example_policies()}) == sorted(KINDS)


@pytest.mark.parametrize(
    "obj", _example_policies(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_example_validates_against_its_crd(obj: dict[str, Any]) -> None:
    assert schema_errors(obj) == []


FULL_ACCESS_SPEC = {
    "mtls": {"mode": "STRICT"},
    "rules": [
        {
            "action": "ALLOW",
            "from": [
                {
                    "identities": ["spiffe://cluster.local/ns/default/sa/frontend"],
                    "serviceAccounts": ["default/frontend", "batch"],
                    "namespaces": ["shop"],
                }
            ],
            "to": [{"methods": ["/demo.Reviews/*"], "paths": ["/healthz", "*"]}],
        }
    ],
}
FULL_MESH_SPEC = {
    "trustDomain": "example.org",
    "clusterDomain": "cluster.local",
    "mtls": {"mode": "STRICT"},
    "certificateTTL": "12h",
    "tracing": {"sampling": 0.5},
    "accessLogs": {"enabled": True},
    "sidecar": {"outboundPort": 15001},
}
STATUS = {
    "conditions": [
        {
            "type": "Accepted",
            "status": "True",
            "reason": "Accepted",
            "message": "",
            "lastTransitionTime": "2024-01-01T00:00:00Z",
        }
    ]
}


@pytest.mark.parametrize(
    "obj",
    [
        policy("TrafficPolicy", **FULL_TRAFFIC_SPEC),
        policy("AccessPolicy", **FULL_ACCESS_SPEC),
        mesh_config(**FULL_MESH_SPEC),
        {**policy("TrafficPolicy"), "status": STATUS},
    ],
    ids=["TrafficPolicy", "AccessPolicy", "MeshConfig", "status"],
)
def test_full_specs_are_valid_for_both(obj: dict[str, Any]) -> None:
    assert schema_errors(obj) == []
    _, problems = parse(service(), obj)
    assert lines(problems) == []


# ------------------------------------------- invalid specs: rejected by both, alike


def _tp(**spec: Any) -> dict[str, Any]:
    return policy("TrafficPolicy", **spec)


def _ap(**spec: Any) -> dict[str, Any]:
    return policy("AccessPolicy", **spec)


INVALID = [
    ("unknown field", _tp(timout="1s")),
    ("missing targetRef", {**_tp(), "spec": {"timeout": "1s"}}),
    ("targetRef kind", _tp(targetRef={"kind": "Deployment", "name": "reviews"})),
    ("load balancer type", _tp(loadBalancer={"type": "RANDOM"})),
    ("choiceCount", _tp(loadBalancer={"choiceCount": 1})),
    ("timeout format", _tp(timeout="2 seconds")),
    ("timeout unit", _tp(timeout="2")),
    ("retryOn code", _tp(retries={"retryOn": ["UNAVAILBLE"]})),
    ("retryOn OK", _tp(retries={"retryOn": ["OK"]})),
    ("retryOn empty", _tp(retries={"retryOn": []})),
    ("retryOn duplicate", _tp(retries={"retryOn": ["UNAVAILABLE", "UNAVAILABLE"]})),
    ("attempts", _tp(retries={"attempts": 0})),
    ("budget percent", _tp(retries={"budget": {"percent": 101}})),
    ("ejection percent", _tp(outlierDetection={"maxEjectionPercent": 101})),
    ("rate zero", _tp(rateLimit={"requestsPerSecond": 0})),
    ("rate missing", _tp(rateLimit={"burst": 5})),
    ("fault empty", _tp(faultInjection={})),
    ("delay without fixedDelay", _tp(faultInjection={"delay": {"percent": 5}})),
    ("abort status", _tp(faultInjection={"abort": {"percent": 5, "httpStatus": 99}})),
    ("mtls mode case", _ap(mtls={"mode": "strict"})),
    ("mtls without mode", _ap(mtls={})),
    ("action", _ap(rules=[{"action": "PERMIT"}])),
    ("rule without action", _ap(rules=[{"from": [{"namespaces": ["x"]}]}])),
    ("empty from", _ap(rules=[{"action": "ALLOW", "from": []}])),
    ("empty source", _ap(rules=[{"action": "ALLOW", "from": [{}]}])),
    ("identity", _ap(rules=[{"action": "ALLOW", "from": [{"identities": ["frontend"]}]}])),
    ("dotted service account", _ap(rules=[{"action": "ALLOW", "from": [
        {"serviceAccounts": ["shop/api.payments"]}]}])),
    ("upper-case service account", _ap(rules=[{"action": "ALLOW", "from": [
        {"serviceAccounts": ["Cart"]}]}])),
    ("dotted namespace", _ap(rules=[{"action": "ALLOW", "from": [
        {"namespaces": ["payments.shop"]}]}])),
    ("namespace ending in '-'", _ap(rules=[{"action": "ALLOW", "from": [
        {"namespaces": ["shop-"]}]}])),
    ("method", _ap(rules=[{"action": "ALLOW", "to": [{"methods": ["Get"]}]}])),
    ("sampling", mesh_config(tracing={"sampling": 2})),
    ("outbound port", mesh_config(sidecar={"outboundPort": 0})),
    ("access logs", mesh_config(accessLogs={"enabled": "yes"})),
    ("trust domain", mesh_config(trustDomain="Not A Domain")),
    ("certificate TTL", mesh_config(certificateTTL="1d")),
]


@pytest.mark.parametrize(("name", "obj"), INVALID, ids=[n for n, _ in INVALID])
def test_invalid_spec_is_rejected_by_schema_and_parser(name: str, obj: dict[str, Any]) -> None:
    assert schema_errors(obj), f"the CRD schema accepts {name}"
    _, problems = parse(service(), obj)
    assert problems, f"the parser accepts {name}"


def test_crd_files_are_the_three_kinds() -> None:
    assert sorted(p.name for p in Path(CRD_DIR).glob("*.yaml")) == [
        "meshlib.dev_accesspolicies.yaml",
        "meshlib.dev_meshconfigs.yaml",
        "meshlib.dev_trafficpolicies.yaml",
    ]
