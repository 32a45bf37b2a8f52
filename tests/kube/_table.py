"""Server-side printing: the ``meta.k8s.io/v1 Table`` that ``kubectl get`` asks for
(``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``): built-in types with the
columns their printers have, custom resources with their CRD's
``additionalPrinterColumns`` (simple JSONPath), rows carrying PartialObjectMetadata.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Callable
from typing import Any

from tests.kube._resources import ResourceType

__all__ = ["table", "wants_table"]

Obj = dict[str, Any]
Column = tuple[str, str, Callable[[Obj], Any]]  # (name, type, cell)


def wants_table(accept: str) -> bool:
    return "as=Table" in accept and "g=meta.k8s.io" in accept


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 192:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    return f"{h // 24 // 365}y{h // 24 % 365}d"


def _age(obj: Obj) -> str:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    then = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    return human_duration(time.time() - then)


def _ports(ports: list[Obj] | None, *, proto: bool) -> str:
    if not ports:
        return "<none>"
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" if proto
                    else str(p.get("port")) for p in ports)


def _get(obj: Obj, *path: str) -> Any:
    for part in path:
        obj = obj.get(part) if isinstance(obj, dict) else None  # type: ignore[assignment]
    return obj


_BUILTIN: dict[str, list[Column]] = {
    "namespaces": [("Status", "string", lambda o: _get(o, "status", "phase") or "")],
    "services": [
        ("Type", "string", lambda o: _get(o, "spec", "type") or ""),
        ("Cluster-IP", "string", lambda o: _get(o, "spec", "clusterIP") or "<none>"),
        ("External-IP", "string", lambda o: "<none>"),
        ("Port(s)", "string", lambda o: _ports(_get(o, "spec", "ports"), proto=True)),
    ],
    "configmaps": [("Data", "integer", lambda o: len(o.get("data") or {})
                    + len(o.get("binaryData") or {}))],
    "secrets": [("Type", "string", lambda o: o.get("type", "")),
                ("Data", "integer", lambda o: len(o.get("data") or {}))],
    "serviceaccounts": [("Secrets", "integer", lambda o: len(o.get("secrets") or []))],
    "pods": [
        ("Ready", "string", lambda o: f"0/{len(_get(o, 'spec', 'containers') or [])}"),
        ("Status", "string", lambda o: _get(o, "status", "phase") or ""),
        ("Restarts", "string", lambda o: "0"),
    ],
    "endpointslices.discovery.k8s.io": [
        ("AddressType", "string", lambda o: o.get("addressType", "")),
        ("Ports", "string", lambda o: _ports(o.get("ports"), proto=False)),
        ("Endpoints", "string", lambda o: ",".join(
            a for e in o.get("endpoints") or [] for a in e.get("addresses") or []) or "<unset>"),
    ],
    "leases.coordination.k8s.io": [
        ("Holder", "string", lambda o: _get(o, "spec", "holderIdentity") or "")],
    "grpcroutes.gateway.networking.k8s.io": [
        ("Hostnames", "string", lambda o: json.dumps(_get(o, "spec", "hostnames"))
         if _get(o, "spec", "hostnames") else "")],
    "httproutes.gateway.networking.k8s.io": [
        ("Hostnames", "string", lambda o: json.dumps(_get(o, "spec", "hostnames"))
         if _get(o, "spec", "hostnames") else "")],
}
_NO_AGE = {"customresourcedefinitions.apiextensions.k8s.io"}
_CRD_COLUMNS = {"customresourcedefinitions.apiextensions.k8s.io": [
    ("Created At", "string", lambda o: _get(o, "metadata", "creationTimestamp"))]}

_TOKEN = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.-]+)==[\"']([^\"']*)"
                    r"[\"']\)\]|\[\*\]")


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Values at a simple JSONPath (``.a.b``, ``[0]``, ``[*]``, ``[?(@.k=="v")]``)."""
    values = [obj]
    text = path.strip().removeprefix("{").removesuffix("}").removeprefix("$")
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            return []
        pos = m.end()
        key, index, fkey, fval = m.groups()
        out: list[Any] = []
        for v in values:
            if key is not None and isinstance(v, dict) and key in v:
                out.append(v[key])
            elif index is not None and isinstance(v, list) and int(index) < len(v):
                out.append(v[int(index)])
            elif fkey is not None and isinstance(v, list):
                out += [i for i in v if isinstance(i, dict) and str(_get(i, *fkey.split(".")))
                        == fval]
            elif m.group(0) == "[*]" and isinstance(v, list):
                out += v
        values = out
    return values


def _printer_columns(rt: ResourceType, priorities: dict[str, int]) -> list[Column]:
    if rt.group_resource in _CRD_COLUMNS:
        return _CRD_COLUMNS[rt.group_resource]
    if rt.printer_columns:
        cols: list[Column] = []
        for col in rt.printer_columns:
            def cell(o: Obj, path: str = col["jsonPath"]) -> Any:
                found = jsonpath(o, path)
                return found[0] if found else None
            cols.append((col["name"], col.get("type", "string"), cell))
            priorities[col["name"]] = col.get("priority", 0)
        return cols
    return [*_BUILTIN.get(rt.group_resource, []), ("Age", "date", _age)]


def table(rt: ResourceType, objs: list[Obj], meta: Obj, *, columns_too: bool = True) -> Obj:
    """A Table of these objects; ``meta`` is the list metadata (resourceVersion,
    continue). A watch sends the column definitions with its first event only."""
    priorities: dict[str, int] = {}
    columns = _printer_columns(rt, priorities)
    if rt.printer_columns or rt.group_resource in _NO_AGE:
        columns = [c for c in columns if c[0] != "Age" or c[2] is not _age]
    defs = [{"name": "Name", "type": "string", "format": "name",
             "description": "Name must be unique within a namespace.", "priority": 0}]
    defs += [{"name": name, "type": "string" if kind == "date" else kind, "format": "",
              "description": "", "priority": priorities.get(name, 0)}
             for name, kind, _ in columns]
    rows = []
    for obj in objs:
        cells: list[Any] = [obj["metadata"]["name"]]
        for _, kind, fn in columns:
            value = fn(obj)
            if kind == "date" and isinstance(value, str) and fn is not _age:
                value = _age({"metadata": {"creationTimestamp": value}})
            cells.append(value)
        rows.append({"cells": cells, "object": {
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"]}})
    out: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
                "rows": rows}
    if columns_too:
        out["columnDefinitions"] = defs
    return out
