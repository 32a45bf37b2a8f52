"""Label and field selectors, as the ``labelSelector`` / ``fieldSelector`` query
parameters spell them (k8s.io/apimachinery/pkg/labels and pkg/fields).

Label: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``,
joined by commas. Field: ``path=value``, ``path==value``, ``path!=value``; which paths a
resource supports is the server's choice (``metadata.name`` and ``metadata.namespace``
everywhere, a few more per kind, as the real one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from tests.kube._errors import ApiError

__all__ = ["Selector", "field_selector", "label_selector"]

Selector = Callable[[Mapping[str, Any]], bool]

_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")

# Beyond metadata.name / metadata.namespace (pkg/registry/*/strategy.go GetAttrs).
_EXTRA_FIELDS = {
    "Pod": ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
            "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
            "status.nominatedNodeName"),
    "Secret": ("type",),
    "Namespace": ("status.phase",),
}


def _split_requirements(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def label_selector(text: str | None) -> Selector:
    """A predicate on an object for a ``labelSelector`` string (empty: everything)."""
    if not text:
        return lambda obj: True
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for req in _split_requirements(text):
        if m := _SET_RE.match(req):
            key, op, values = m.group(1), m.group(2), {
                v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                checks.append(lambda lb, k=key, vs=values: lb.get(k) in vs)
            else:
                checks.append(lambda lb, k=key, vs=values: lb.get(k) not in vs)
        elif "!=" in req:
            key, value = (s.strip() for s in req.split("!=", 1))
            checks.append(lambda lb, k=key, v=value: lb.get(k) != v)
        elif "=" in req:
            key, value = (s.strip() for s in re.split(r"==?", req, maxsplit=1))
            checks.append(lambda lb, k=key, v=value: lb.get(k) == v)
        elif req.startswith("!"):
            absent = req[1:].strip()
            checks.append(lambda lb, k=absent: k not in lb)
        elif re.fullmatch(r"[A-Za-z0-9./_-]+", req):
            checks.append(lambda lb, k=req: k in lb)
        else:
            raise ApiError.bad_request(f"unable to parse requirement: {req!r}")

    def match(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(check(labels) for check in checks)
    return match


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_selector(text: str | None, kind: str) -> Selector:
    """A predicate for a ``fieldSelector`` string; an unsupported field is a 400, as
    the real server answers ``field label not supported``."""
    if not text:
        return lambda obj: True
    allowed = {"metadata.name", "metadata.namespace", *_EXTRA_FIELDS.get(kind, ())}
    checks: list[tuple[str, bool, str]] = []
    for req in _split_requirements(text):
        if "!=" in req:
            path, value = req.split("!=", 1)
            negate = True
        elif "=" in req:
            path, value = re.split(r"==?", req, maxsplit=1)
            negate = False
        else:
            raise ApiError.bad_request(f"invalid selector: '{text}'; can't understand '{req}'")
        path = path.strip()
        if path not in allowed:
            raise ApiError.bad_request(f'field label not supported: {path}')
        checks.append((path, negate, value.strip()))

    def match(obj: Mapping[str, Any]) -> bool:
        return all((_field_value(obj, p) == v) != neg for p, neg, v in checks)
    return match
