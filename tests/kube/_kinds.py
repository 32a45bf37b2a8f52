"""What the real registry strategies do per kind on create and update: defaults,
allocated values (a Service's clusterIP), initial status, and the validation a client
most often trips on (names, labels, required fields). Everything else is stored as
sent.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from datetime import UTC, datetime
from typing import Any

from tests.kube._resources import GATEWAY_GROUP, ResourceType

__all__ = ["gateway_defaults_schema", "prepare_create", "prepare_update", "validate"]

Cause = tuple[str, str, str]  # (reason, field, message)

_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL_1123 = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
_QUALIFIED = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"

_NAME_RULES = {
    "namespaces": (_LABEL_1123, 63, "a lowercase RFC 1123 label must consist of lower case "
                   "alphanumeric characters or '-', and must start and end with an "
                   "alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                   f"validation is '{_LABEL_1123}')"),
    "services": (_LABEL_1035, 63, "a DNS-1035 label must consist of lower case alphanumeric "
                 "characters or '-', start with an alphabetic character, and end with an "
                 "alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
                 f"validation is '{_LABEL_1035}')"),
}
_SUBDOMAIN_RULE = (_SUBDOMAIN, 253, "a lowercase RFC 1123 subdomain must consist of lower "
                   "case alphanumeric characters, '-' or '.', and must start and end with an "
                   "alphanumeric character (e.g. 'example.com', regex used for validation "
                   f"is '{_SUBDOMAIN}')")

_cluster_ips = itertools.count(10)


def validate(rt: ResourceType, obj: dict[str, Any]) -> list[Cause]:
    meta = obj.get("metadata") or {}
    causes: list[Cause] = []
    name = meta.get("name", "")
    pattern, limit, text = _NAME_RULES.get(rt.plural, _SUBDOMAIN_RULE)
    if not re.fullmatch(pattern, name) or len(name) > limit:
        causes.append(("FieldValueInvalid", "metadata.name",
                       f'Invalid value: "{name}": {text}'))
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, short = key.rpartition("/")
        if not re.fullmatch(_QUALIFIED, short) or len(short) > 63 or (
                prefix and not re.fullmatch(_SUBDOMAIN, prefix)):
            causes.append(("FieldValueInvalid", "metadata.labels",
                           f'Invalid value: "{key}": name part must consist of alphanumeric '
                           "characters, '-', '_' or '.'"))
        if not isinstance(value, str) or not re.fullmatch(_LABEL_VALUE, value) or len(value) > 63:
            causes.append(("FieldValueInvalid", "metadata.labels",
                           f'Invalid value: "{value}": a valid label must be an empty string '
                           "or consist of alphanumeric characters, '-', '_' or '.'"))
    causes += _KIND_CHECKS.get(rt.group_resource, lambda o: [])(obj)
    return causes


def _check_service(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    ports = spec.get("ports") or []
    causes: list[Cause] = []
    if not ports and spec.get("clusterIP") != "None" and spec.get("type") != "ExternalName":
        causes.append(("FieldValueRequired", "spec.ports", "Required value"))
    for i, port in enumerate(ports):
        if not isinstance(port.get("port"), int) or not 0 < port["port"] < 65536:
            causes.append(("FieldValueInvalid", f"spec.ports[{i}].port",
                           f"Invalid value: {port.get('port')}: must be between 1 and 65535, "
                           "inclusive"))
        if len(ports) > 1 and not port.get("name"):
            causes.append(("FieldValueRequired", f"spec.ports[{i}].name", "Required value"))
    return causes


def _check_endpoint_slice(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    if obj.get("addressType") not in ("IPv4", "IPv6", "FQDN"):
        causes.append(("FieldValueNotSupported", "addressType",
                       f'Unsupported value: "{obj.get("addressType", "")}": supported values: '
                       '"FQDN", "IPv4", "IPv6"'))
    for i, ep in enumerate(obj.get("endpoints") or []):
        if not ep.get("addresses"):
            causes.append(("FieldValueRequired", f"endpoints[{i}].addresses", "Required value"))
    return causes


def _check_secret(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for key, value in (obj.get("data") or {}).items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError):
            causes.append(("FieldValueInvalid", f"data[{key}]",
                           "Invalid value: illegal base64 data"))
    return causes


def _check_crd(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    expected = f"{names.get('plural', '')}.{spec.get('group', '')}"
    name = (obj.get("metadata") or {}).get("name")
    causes: list[Cause] = []
    if name != expected:
        causes.append(("FieldValueInvalid", "metadata.name",
                       f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'))
    if not spec.get("versions"):
        causes.append(("FieldValueRequired", "spec.versions", "Required value"))
    elif sum(bool(v.get("storage")) for v in spec["versions"]) != 1:
        causes.append(("FieldValueInvalid", "spec.versions",
                       "Invalid value: must have exactly one version marked as storage version"))
    return causes


_KIND_CHECKS = {
    "services": _check_service,
    "endpointslices.discovery.k8s.io": _check_endpoint_slice,
    "secrets": _check_secret,
    "customresourcedefinitions.apiextensions.k8s.io": _check_crd,
}


def prepare_create(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Defaults and initial status, in place (the strategies' PrepareForCreate and
    the defaulting funcs)."""
    spec = obj.get("spec")
    gr = rt.group_resource
    if gr == "namespaces":
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = \
            obj["metadata"]["name"]
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
    elif gr == "services":
        spec = obj.setdefault("spec", {})
        _service_defaults(spec, None)
        obj["status"] = {"loadBalancer": {}}
    elif gr == "secrets":
        _secret_defaults(obj)
    elif gr == "pods":
        spec = obj.setdefault("spec", {})
        for key, value in (("restartPolicy", "Always"), ("dnsPolicy", "ClusterFirst"),
                           ("schedulerName", "default-scheduler"),
                           ("terminationGracePeriodSeconds", 30),
                           ("serviceAccountName", "default"), ("securityContext", {})):
            spec.setdefault(key, value)
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif gr == "endpointslices.discovery.k8s.io":
        for port in obj.get("ports") or []:
            port.setdefault("protocol", "TCP")
    elif gr == "customresourcedefinitions.apiextensions.k8s.io":
        _crd_status(obj)
    elif gr == "leases.coordination.k8s.io":
        _lease_times(obj)
    elif rt.custom and rt.status:
        obj.pop("status", None)


def prepare_update(rt: ResourceType, new: dict[str, Any], old: dict[str, Any]) -> None:
    """What the strategies' PrepareForUpdate keep or recompute, in place."""
    gr = rt.group_resource
    if gr == "services":
        _service_defaults(new.setdefault("spec", {}), old.get("spec") or {})
    elif gr == "secrets":
        _secret_defaults(new)
    elif gr == "endpointslices.discovery.k8s.io":
        for port in new.get("ports") or []:
            port.setdefault("protocol", "TCP")
    elif gr == "namespaces":
        new["spec"] = old.get("spec")
        new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = \
            new["metadata"]["name"]
    elif gr == "customresourcedefinitions.apiextensions.k8s.io":
        _crd_status(new)
    elif gr == "leases.coordination.k8s.io":
        _lease_times(new)


def _lease_times(obj: dict[str, Any]) -> None:
    """MicroTime fields as the server writes them back: UTC, microseconds, "Z"."""
    spec = obj.get("spec") or {}
    for key in ("acquireTime", "renewTime"):
        value = spec.get(key)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            spec[key] = parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _service_defaults(spec: dict[str, Any], old: dict[str, Any] | None) -> None:
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if old is not None:  # patchAllocatedValues: unset allocated fields keep their values
        for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if key not in spec and key in old:
                spec[key] = old[key]
    if spec["type"] != "ExternalName":
        if "clusterIP" not in spec:
            n = next(_cluster_ips)
            spec["clusterIP"] = f"10.96.{n // 250 % 250}.{n % 250 + 1}"
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


def _secret_defaults(obj: dict[str, Any]) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _crd_status(obj: dict[str, Any]) -> None:
    spec = obj.get("spec") or {}
    stamp = obj["metadata"].get("creationTimestamp")
    names = dict(spec.get("names") or {})
    names.setdefault("singular", names.get("kind", "").lower())
    names.setdefault("listKind", f"{names.get('kind', '')}List")
    obj["status"] = {
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": stamp},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": stamp},
        ],
        "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
    }


def _typed(prop: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": prop}


_BACKEND_REF = _typed({"group": {"default": ""}, "kind": {"default": "Service"},
                       "weight": {"default": 1}})
_PARENT_REF = _typed({"group": {"default": GATEWAY_GROUP}, "kind": {"default": "Gateway"}})
_HEADER = _typed({"type": {"default": "Exact"}})
_PATH_PREFIX = {"type": "PathPrefix", "value": "/"}


def gateway_defaults_schema(kind: str) -> dict[str, Any]:
    """The defaults of the Gateway API v1.2 CRD schemas for GRPCRoute / HTTPRoute,
    which a real cluster applies on write."""
    if kind == "GRPCRoute":
        match = _typed({"method": _typed({"type": {"default": "Exact"}}),
                        "headers": {"items": _HEADER}})
        rule = _typed({"matches": {"items": match}, "backendRefs": {"items": _BACKEND_REF}})
        spec = _typed({"parentRefs": {"items": _PARENT_REF}, "rules": {"items": rule}})
    else:
        match = _typed({"path": {"default": _PATH_PREFIX, **_typed(
                            {"type": {"default": "PathPrefix"}, "value": {"default": "/"}})},
                        "headers": {"items": _HEADER}, "queryParams": {"items": _HEADER}})
        rule = _typed({"matches": {"default": [{"path": _PATH_PREFIX}], "items": match},
                       "backendRefs": {"items": _BACKEND_REF}})
        spec = _typed({"parentRefs": {"items": _PARENT_REF},
                       "rules": {"default": [{"matches": [{"path": _PATH_PREFIX}]}],
                                 "items": rule}})
    return _typed({"spec": spec})
