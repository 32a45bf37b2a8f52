"""What the control plane says about each object it reads, the Gateway API way.

Pure: objects and their problems in, the ``status`` each should carry out.

* A ``GRPCRoute``/``HTTPRoute`` gets one ``status.parents[]`` entry per Service it
  attaches to, under ``controllerName: meshlib.dev/control-plane`` (entries of other
  controllers are kept as they are), with the two conditions the Gateway API asks of
  every route: ``Accepted`` (``Accepted``, or ``NoMatchingParent`` when the Service
  does not exist, ``UnsupportedValue`` for a field we refuse) and ``ResolvedRefs``
  (``ResolvedRefs``, or ``BackendNotFound``).
* ``TrafficPolicy``, ``AccessPolicy`` and ``MeshConfig`` get ``status.conditions``
  with ``Accepted``: ``Accepted``, or ``Invalid`` with the lines ``meshctl check``
  prints for it.

``lastTransitionTime`` only moves when a condition's status does, so an unchanged
object gets an unchanged status and is not written again.

Example::

    wanted = route_status(route, problems, now="2026-12-04T20:00:00Z", previous=route)
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from meshlib.contract import Problem

__all__ = [
    "CONTROLLER_NAME",
    "POLICY_KINDS",
    "ROUTE_KINDS",
    "StatusWriter",
    "policy_status",
    "route_status",
    "status_of",
]

log = logging.getLogger(__name__)

CONTROLLER_NAME = "meshlib.dev/control-plane"
ROUTE_KINDS = ("GRPCRoute", "HTTPRoute")
POLICY_KINDS = ("TrafficPolicy", "AccessPolicy", "MeshConfig")
_MAX_MESSAGE = 32768  # the CRDs' maxLength for a condition message


def status_of(obj: Mapping[str, Any], problems: Sequence[Problem], now: str
              ) -> dict[str, Any] | None:
    """The status ``obj`` should carry (None: a kind we write no status for)."""
    kind = obj.get("kind")
    if kind in ROUTE_KINDS:
        return route_status(obj, problems, now)
    if kind in POLICY_KINDS:
        return policy_status(obj, problems, now)
    return None


def route_status(route: Mapping[str, Any], problems: Sequence[Problem], now: str
                 ) -> dict[str, Any]:
    """``status`` of a route: our ``parents[]`` entries (one per parentRef), the
    entries of other controllers kept."""
    spec = route.get("spec") or {}
    metadata = route.get("metadata") or {}
    generation = int(metadata.get("generation") or 0)
    old = (route.get("status") or {}).get("parents") or []
    ours_before = {_ref_key(p.get("parentRef") or {}): p for p in old
                   if p.get("controllerName") == CONTROLLER_NAME}
    others = [p for p in old if p.get("controllerName") != CONTROLLER_NAME]
    backend = [p for p in problems if ".backendRefs" in p.field]
    entries = []
    for index, ref in enumerate(spec.get("parentRefs") or []):
        here = f"spec.parentRefs[{index}]"
        parent = [p for p in problems if p.field == here or p.field.startswith(here + ".")]
        rest = [p for p in problems if p not in backend and p not in parent
                and not p.field.startswith("spec.parentRefs")]
        if parent:
            accepted = _condition("Accepted", False, "NoMatchingParent", parent)
        elif rest:
            accepted = _condition("Accepted", False, "UnsupportedValue", rest)
        else:
            accepted = _condition("Accepted", True, "Accepted", (),
                                  "attached to the Service's mesh traffic")
        if backend:
            resolved = _condition("ResolvedRefs", False, "BackendNotFound", backend)
        else:
            resolved = _condition("ResolvedRefs", True, "ResolvedRefs", (),
                                  "every backend Service exists")
        parent_ref = _parent_ref(ref, route)
        before = ours_before.get(_ref_key(parent_ref)) or {}
        entries.append({
            "parentRef": parent_ref,
            "controllerName": CONTROLLER_NAME,
            "conditions": _stamped([accepted, resolved], before.get("conditions") or [],
                                   generation, now),
        })
    return {"parents": [*others, *entries]}


def policy_status(policy: Mapping[str, Any], problems: Sequence[Problem], now: str
                  ) -> dict[str, Any]:
    """``status`` of a TrafficPolicy, AccessPolicy or MeshConfig: ``Accepted``."""
    metadata = policy.get("metadata") or {}
    generation = int(metadata.get("generation") or 0)
    if problems:
        accepted = _condition("Accepted", False, "Invalid", problems)
    else:
        accepted = _condition("Accepted", True, "Accepted", (), "in force")
    old = (policy.get("status") or {}).get("conditions") or []
    kept = [c for c in old if c.get("type") != "Accepted"]
    return {"conditions": [*kept, *_stamped([accepted], old, generation, now)]}


def _condition(kind: str, ok: bool, reason: str, problems: Iterable[Problem],
               message: str = "") -> dict[str, Any]:
    lines = [f"{p.field}: {p.message}" if p.field else p.message for p in problems]
    return {"type": kind, "status": "True" if ok else "False", "reason": reason,
            "message": ("; ".join(lines) or message)[:_MAX_MESSAGE]}


def _stamped(conditions: list[dict[str, Any]], before: Sequence[Mapping[str, Any]],
             generation: int, now: str) -> list[dict[str, Any]]:
    """``conditions`` with ``observedGeneration`` and a ``lastTransitionTime`` that
    moves only when the condition's status changes."""
    previous = {c.get("type"): c for c in before}
    out = []
    for condition in conditions:
        old = previous.get(condition["type"]) or {}
        moved = old.get("status") != condition["status"] or "lastTransitionTime" not in old
        out.append({**condition, "observedGeneration": generation,
                    "lastTransitionTime": now if moved else old["lastTransitionTime"]})
    return out


def _parent_ref(ref: Mapping[str, Any], route: Mapping[str, Any]) -> dict[str, Any]:
    """The parentRef as the Gateway API wants it echoed: group, kind, name, and the
    namespace and port when given."""
    out: dict[str, Any] = {"group": ref.get("group", ""), "kind": ref.get("kind", "Service"),
                           "name": ref.get("name", "")}
    if ref.get("namespace"):
        out["namespace"] = ref["namespace"]
    if ref.get("port") is not None:
        out["port"] = ref["port"]
    return out


def _ref_key(ref: Mapping[str, Any]) -> tuple[Any, ...]:
    return (ref.get("group", ""), ref.get("kind", "Service"), ref.get("name"),
            ref.get("namespace"), ref.get("port"))


class StatusWriter:
    """Writes :func:`status_of` onto the objects whose status differs, through their
    ``/status`` subresource (a JSON merge patch of ``status``), while ``is_leader()``.

    Example::

        writer = StatusWriter(api, is_leader=lambda: elector.is_leader)
        writer.write(source.objects(), change.problems)     # blocking: run in a thread
    """

    def __init__(self, api: Any, is_leader: Any = lambda: True,
                 clock: Any = None) -> None:
        self.api = api
        self.is_leader = is_leader
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.writes = 0  # status writes made
        self.failures = 0

    def write(self, objects: Iterable[Mapping[str, Any]], problems: Sequence[Problem]) -> int:
        """Write what changed; the number of objects written. Failures are logged and
        counted (the next round tries again)."""
        if not self.is_leader():
            return 0
        from xds_server.sources.kubernetes import RESOURCES_BY_KIND
        from xds_server.sources.parse_core import object_label

        by_object: dict[str, list[Problem]] = {}
        for problem in problems:
            by_object.setdefault(problem.obj, []).append(problem)
        now = self._clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        written = 0
        for obj in objects:
            kind = str(obj.get("kind", ""))
            resource = RESOURCES_BY_KIND.get(kind)
            if resource is None:
                continue
            namespace, name, label = object_label(kind, obj.get("metadata"),
                                                  namespaced=resource.namespaced)
            wanted = status_of(obj, by_object.get(label, []), now)
            if wanted is None or wanted == (obj.get("status") or {}):
                continue
            if not self.is_leader():
                return written  # lost the Lease meanwhile: stop writing
            path = resource.path(namespace or None, name, "status")
            try:
                self.api.patch(path, {"status": wanted})
            except Exception as err:  # the object went away, the server is down
                self.failures += 1
                log.warning("status of %s not written: %s", label, err)
                continue
            written += 1
            self.writes += 1
        return written
