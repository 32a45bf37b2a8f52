"""The registry of served resource types, and what discovery says of it: ``/api``,
``/apis``, ``/apis/<group>``, ``/api/v1`` and ``/apis/<group>/<version>``
(legacy discovery: kubectl 1.32 asks for the aggregated v2 format first and falls back
when the answer is plain ``application/json``), ``/version``, and ``/openapi/v3``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from typing import Any

from tests.kube._resources import BUILTIN_TYPES, ResourceType, types_from_crd
from tests.kube._schema import gv_openapi

__all__ = ["VERSION_INFO", "Registry"]

VERSION_INFO = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.0-meshlib-fake",
    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23.4", "compiler": "gc",
    "platform": "linux/amd64",
}

_BUILTIN_GROUP_ORDER = ["", "apiextensions.k8s.io", "authentication.k8s.io",
                        "coordination.k8s.io", "discovery.k8s.io"]


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version order: GA > beta > alpha, then higher numbers first."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0)
    stage = {"": 0, "beta": 1, "alpha": 2}[m.group(2) or ""]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0))


class Registry:
    """Resource types by (group, version, plural); CRDs add and remove theirs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._types: dict[tuple[str, str, str], ResourceType] = {
            (t.group, t.version, t.plural): t for t in BUILTIN_TYPES}
        self._builtin = set(self._types)
        self._openapi_cache: dict[tuple[str, str], tuple[str, bytes]] = {}

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        with self._lock:
            return self._types.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        with self._lock:
            return next((t for t in self._types.values()
                         if (t.group, t.version, t.kind) == (group, version, kind)), None)

    def by_resource(self, resource: str) -> ResourceType | None:
        """``services``, ``svc``, ``grpcroutes``, ``leases.coordination.k8s.io``."""
        name, _, group = resource.partition(".")
        with self._lock:
            for t in self._types.values():
                if (name in (t.plural, t.singular, t.kind.lower()) or name in t.short_names) \
                        and (not group or group == t.group):
                    return t
        return None

    def versions(self, group: str) -> list[str]:
        with self._lock:
            found = {v for (g, v, _) in self._types if g == group}
        return sorted(found, key=_version_priority)

    def groups(self) -> list[str]:
        with self._lock:
            groups = {g for (g, _, _) in self._types}
        builtin = [g for g in _BUILTIN_GROUP_ORDER if g in groups]
        return builtin + sorted(groups - set(builtin))

    def resources(self, group: str, version: str) -> list[ResourceType]:
        with self._lock:
            return [t for (g, v, _), t in self._types.items() if (g, v) == (group, version)]

    def set_crd(self, crd: dict[str, Any] | None, old: dict[str, Any] | None) -> None:
        """Replace the types of CRD ``old`` with those of ``crd`` (either may be None)."""
        with self._lock:
            for t in types_from_crd(old) if old else ():
                key = (t.group, t.version, t.plural)
                if key not in self._builtin:
                    self._types.pop(key, None)
            for t in types_from_crd(crd) if crd else ():
                key = (t.group, t.version, t.plural)
                if key not in self._builtin:
                    self._types[key] = t
            self._openapi_cache.clear()

    # Documents --------------------------------------------------------------------

    def api_versions(self, address: str) -> dict[str, Any]:
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                "serverAddress": address}]}

    def api_group(self, group: str) -> dict[str, Any] | None:
        versions = self.versions(group)
        if not versions or not group:
            return None
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs,
                "preferredVersion": gvs[0]}

    def api_group_list(self) -> dict[str, Any]:
        groups = [self.api_group(g) for g in self.groups() if g]
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [{k: v for k, v in g.items() if k not in ("kind", "apiVersion")}
                           for g in groups if g]}

    def api_resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        types = self.resources(group, version)
        if not types:
            return None
        entries = [e for t in sorted(types, key=lambda t: t.plural) for e in t.discovery()]
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version,
                "resources": entries}

    def openapi_root(self) -> dict[str, Any]:
        paths = {}
        for group in self.groups():
            for version in self.versions(group):
                path = f"apis/{group}/{version}" if group else f"api/{version}"
                digest, _ = self.openapi_doc(group, version)
                paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
        return {"paths": paths}

    def openapi_doc(self, group: str, version: str) -> tuple[str, bytes]:
        """(hash, JSON) of a group version's OpenAPI v3 document, cached."""
        with self._lock:
            cached = self._openapi_cache.get((group, version))
        if cached:
            return cached
        body = json.dumps(gv_openapi(self.resources(group, version))).encode()
        entry = (hashlib.sha512(body).hexdigest()[:64].upper(), body)
        with self._lock:
            self._openapi_cache[(group, version)] = entry
        return entry
