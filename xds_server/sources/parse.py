"""Kubernetes-shaped objects in, a validated :class:`~xds_server.model.MeshModel` out.

:func:`parse_objects` is pure: it takes plain dicts (what ``kubectl get -o json`` or
a YAML file gives) and does no I/O, so the file loader and a Kubernetes watcher
share it. Every problem is reported, never only the first:

* an object with an invalid value is left out of the model, as the API server
  would reject it; an unknown field is reported and ignored, as the API server
  would prune it;
* a dangling Service reference is reported, and the object kept (see
  :mod:`~xds_server.sources.references`);
* of duplicate objects the first is kept; of two TrafficPolicies for one Service,
  or of two MeshConfigs, the one that takes precedence (oldest, then by name).

Example::

    model, problems = parse_objects([("mesh.yaml", {"apiVersion": "v1", ...})])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshlib.contract import Problem
from xds_server.model import MeshConfig, MeshModel, Service
from xds_server.sources.fields import Fields, ObjectContext, ServiceReference, describe, quote
from xds_server.sources.parse_core import (
    ENDPOINT_SLICE_FIELDS,
    OBJECT_FIELDS,
    Metadata,
    object_label,
    parse_endpoint_slice,
    parse_metadata,
    parse_service,
)
from xds_server.sources.parse_policies import (
    parse_access_policy,
    parse_mesh_config,
    parse_traffic_policy,
)
from xds_server.sources.parse_routes import parse_route
from xds_server.sources.problem_order import ProblemOrder
from xds_server.sources.references import check_references, precedence_order

__all__ = ["SUPPORTED_KINDS", "KindInfo", "ParseMemo", "parse_objects"]

Parser = Callable[[ObjectContext, Fields, Metadata], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class KindInfo:
    """One supported kind: its API group and versions, scope and parser."""

    kind: str
    group: str  # "" for the core group
    versions: tuple[str, ...]
    fields: frozenset[str]  # allowed top-level fields
    parse: Parser
    namespaced: bool = True

    @property
    def api_versions(self) -> tuple[str, ...]:
        """The accepted ``apiVersion`` values, e.g. ``("discovery.k8s.io/v1",)``."""
        return tuple(f"{self.group}/{v}" if self.group else v for v in self.versions)


_GATEWAY_VERSIONS = ("v1", "v1beta1", "v1alpha2")

SUPPORTED_KINDS: Mapping[str, KindInfo] = {
    k.kind: k
    for k in (
        KindInfo(kind="Service", group="", versions=("v1",), fields=OBJECT_FIELDS,
                 parse=parse_service),
        KindInfo(kind="EndpointSlice", group="discovery.k8s.io", versions=("v1",),
                 fields=ENDPOINT_SLICE_FIELDS, parse=parse_endpoint_slice),
        KindInfo(kind="GRPCRoute", group="gateway.networking.k8s.io", versions=_GATEWAY_VERSIONS,
                 fields=OBJECT_FIELDS, parse=lambda c, o, m: parse_route(c, o, m, "GRPCRoute")),
        KindInfo(kind="HTTPRoute", group="gateway.networking.k8s.io", versions=_GATEWAY_VERSIONS,
                 fields=OBJECT_FIELDS, parse=lambda c, o, m: parse_route(c, o, m, "HTTPRoute")),
        KindInfo(kind="TrafficPolicy", group="meshlib.dev", versions=("v1alpha1",),
                 fields=OBJECT_FIELDS, parse=parse_traffic_policy),
        KindInfo(kind="AccessPolicy", group="meshlib.dev", versions=("v1alpha1",),
                 fields=OBJECT_FIELDS, parse=parse_access_policy),
        KindInfo(kind="MeshConfig", group="meshlib.dev", versions=("v1alpha1",),
                 fields=OBJECT_FIELDS, parse=parse_mesh_config, namespaced=False),
    )
}  # fmt: skip


@dataclass(slots=True)
class _Parsed:
    """One object after parsing, before cross-object checks."""

    kind: str
    meta: Metadata
    ctx: ObjectContext
    value: Any
    duplicate: bool = field(default=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.meta.namespace, self.meta.name)


class ParseMemo:
    """Objects parsed by earlier :func:`parse_objects` calls, to parse only what changed.

    Keyed by the identity of the object's dict: a caller that hands the same dict
    again (the file loader does, for files whose bytes did not change) gets the same
    parsed value back — the same model objects, so later stages can compare by
    identity. Entries not seen in a call are dropped at its end.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Mapping[str, Any], str, _Parsed | None, list[Problem]]] = {}
        self._seen: dict[int, tuple[Mapping[str, Any], str, _Parsed | None, list[Problem]]] = {}

    def parse(self, source: str, obj: Mapping[str, Any], problems: list[Problem],
              order: ProblemOrder) -> _Parsed | None:
        entry = self._entries.get(id(obj))
        if entry is None or entry[0] is not obj or entry[1] != source:
            found: list[Problem] = []
            item = _parse_one(source, obj, found, order)
            entry = (obj, source, item, found)
        else:
            item = entry[2]
            label = item.ctx.obj if item is not None else None
            if label is not None:
                order.register(source, label, obj)
            else:  # cached failure: register under the same label again
                _register(source, obj, order)
            if item is not None:
                item.duplicate = False
        self._seen[id(obj)] = entry
        problems.extend(entry[3])
        return item

    def finish(self) -> None:
        """Keep only the entries seen since the last call."""
        self._entries, self._seen = self._seen, {}


def parse_objects(
    objects: Iterable[tuple[str, dict[str, Any]]],
    *,
    memo: ParseMemo | None = None,
) -> tuple[MeshModel, list[Problem]]:
    """Build a model from ``(source, object)`` pairs; return it with every problem found.

    ``source`` names where the object came from (a file path, or ``"kubernetes"``)
    and appears in problems. ``kind: List`` (and ``<Kind>List``) objects are
    unwrapped. The model holds the valid objects, sorted by namespace and name, so
    equal inputs in any order give equal models. Problems come in reading order:
    by source, object, and field position in the object. With a ``memo``, objects
    seen in an earlier call are not parsed again.
    """
    problems: list[Problem] = []
    parsed: list[_Parsed] = []
    order = ProblemOrder()
    for source, document in objects:
        for obj in _unwrap(source, document, problems):
            if memo is not None:
                item = memo.parse(source, obj, problems, order)
            else:
                item = _parse_one(source, obj, problems, order)
            if item is not None:
                parsed.append(item)
                problems.extend(item.ctx.problems)
    if memo is not None:
        memo.finish()
    problems.extend(_mark_duplicates(parsed))
    current = [p for p in parsed if not p.duplicate and p.meta.name]

    services: dict[tuple[str, str], Service | None] = {}
    references: list[ServiceReference] = []
    for item in current:
        references.extend(item.ctx.references)
        if item.kind == "Service":
            services[item.key] = None if item.ctx.invalid else item.value
    problems.extend(check_references(references, services))

    # Conflicts are settled among all objects, valid or not, so the problems say
    # which one wins; the winner is then in the model only if it is valid.
    policies = _settle_policy_conflicts([p for p in current if p.kind == "TrafficPolicy"], problems)
    configs = _settle_mesh_config([p for p in current if p.kind == "MeshConfig"], problems)
    valid = [p for p in current if not p.ctx.invalid]

    def of(*kinds: str) -> tuple[Any, ...]:
        return _sorted(p.value for p in valid if p.kind in kinds)

    model = MeshModel(
        services=of("Service"),
        endpoint_slices=of("EndpointSlice"),
        routes=of("GRPCRoute", "HTTPRoute"),
        traffic_policies=_sorted(p.value for p in policies if not p.ctx.invalid),
        access_policies=of("AccessPolicy"),
        mesh_config=next((c.value for c in configs if not c.ctx.invalid), MeshConfig()),
    )
    return model, order.sorted(problems)


def _sorted(values: Iterable[Any]) -> tuple[Any, ...]:
    """By namespace and name (and kind, for routes), so equal inputs give equal models."""
    return tuple(sorted(values, key=lambda v: (v.namespace, v.name, getattr(v, "kind", ""))))


def _unwrap(source: str, document: object, problems: list[Problem]) -> Iterator[Mapping[str, Any]]:
    """The objects in ``document``: itself, or the items of a ``List``."""
    if not isinstance(document, Mapping):
        problems.append(
            Problem(
                source=source,
                message=f"must be a Kubernetes object with apiVersion and kind, "
                f"got {describe(document)}",
            )
        )
        return
    kind = document.get("kind")
    if not (isinstance(kind, str) and kind.endswith("List") and "items" in document):
        yield document
        return
    items = document.get("items") or []
    if not isinstance(items, list):
        problems.append(Problem(source=source, obj=kind, field="items", message="must be a list"))
        return
    # A typed list from the API (ServiceList) leaves apiVersion and kind out of items.
    item_kind = kind.removesuffix("List") if kind != "List" else None
    for i, item in enumerate(items):
        if isinstance(item, Mapping) and item_kind and "kind" not in item:
            item = {"apiVersion": document.get("apiVersion"), "kind": item_kind, **item}
        if isinstance(item, Mapping):
            yield from _unwrap(source, item, problems)
        else:
            problems.append(
                Problem(
                    source=source,
                    obj=kind,
                    field=f"items[{i}]",
                    message=f"must be a Kubernetes object, got {describe(item)}",
                )
            )


def _register(source: str, obj: Mapping[str, Any], order: ProblemOrder) -> str:
    """Note ``obj`` in ``order`` under its label (``Kind namespace/name``); return it."""
    kind = obj.get("kind")
    info = SUPPORTED_KINDS.get(kind) if isinstance(kind, str) else None
    _, _, label = object_label(
        kind if isinstance(kind, str) and kind else "<no kind>",
        obj.get("metadata"),
        namespaced=info.namespaced if info else True,
    )
    order.register(source, label, obj)
    return label


def _parse_one(
    source: str, obj: Mapping[str, Any], problems: list[Problem], order: ProblemOrder
) -> _Parsed | None:
    kind = obj.get("kind")
    api_version = obj.get("apiVersion")
    info = SUPPORTED_KINDS.get(kind) if isinstance(kind, str) else None
    label = _register(source, obj, order)
    if not isinstance(kind, str) or not kind:
        problems.append(Problem(source=source, obj=label, field="kind", message="is required"))
        return None
    if info is None:
        supported = ", ".join(SUPPORTED_KINDS)
        problems.append(
            Problem(
                source=source,
                obj=label,
                field="kind",
                message=f"unsupported kind {quote(kind)} (supported: {supported})",
            )
        )
        return None
    if api_version not in info.api_versions:
        expected = " or ".join(info.api_versions)
        got = "nothing" if api_version is None else describe(api_version)
        problems.append(
            Problem(
                source=source,
                obj=label,
                field="apiVersion",
                message=f"must be {expected} for {kind}, got {got}",
            )
        )
        return None
    ctx = ObjectContext(source=source, obj=label)
    fields = ctx.view(obj, "", info.fields)
    assert fields is not None  # obj is a Mapping
    meta = parse_metadata(ctx, fields, namespaced=info.namespaced, dns_label=kind == "Service")
    value = info.parse(ctx, fields, meta)
    if not meta.name:
        ctx.invalid = True
    return _Parsed(kind=kind, meta=meta, ctx=ctx, value=value)


def _mark_duplicates(parsed: list[_Parsed]) -> list[Problem]:
    """The first object of each kind/namespace/name wins; later ones are reported."""
    first: dict[tuple[str, str, str], _Parsed] = {}
    problems = []
    for item in parsed:
        if not item.meta.name:
            continue
        key = (item.kind, *item.key)
        if key not in first:
            first[key] = item
            continue
        item.duplicate = True
        where = first[key].ctx.source
        also = "earlier in this file" if where == item.ctx.source else f"in {where}"
        problems.append(
            Problem(
                source=item.ctx.source,
                obj=item.ctx.obj,
                message=f"duplicate object: also defined {also}; this one is ignored",
            )
        )
    return problems


def _settle_policy_conflicts(policies: list[_Parsed], problems: list[Problem]) -> list[_Parsed]:
    """One TrafficPolicy per Service: the first by precedence; the others are reported."""
    by_target: dict[tuple[str, str], list[_Parsed]] = {}
    for p in policies:
        if p.value.target_ref.name:
            by_target.setdefault((p.meta.namespace, p.value.target_ref.name), []).append(p)
    winners: list[_Parsed] = []
    for (_, target), contenders in by_target.items():
        winner, *losers = precedence_order(
            [(p.meta.creation_timestamp, p.meta.namespace, p.meta.name, p) for p in contenders]
        )
        winners.append(winner)
        for loser in losers:
            problems.append(
                Problem(
                    source=loser.ctx.source,
                    obj=loser.ctx.obj,
                    field="spec.targetRef",
                    message=f"conflicts with TrafficPolicy {winner.meta.namespace}/"
                    f"{winner.meta.name} ({winner.ctx.source}), which also targets Service "
                    f"{target} and takes precedence; this policy is ignored",
                )
            )
    return winners


def _settle_mesh_config(configs: list[_Parsed], problems: list[Problem]) -> list[_Parsed]:
    """The MeshConfig that takes precedence (a list of at most one); others are reported."""
    if not configs:
        return []
    winner, *losers = precedence_order(
        [(p.meta.creation_timestamp, "", p.meta.name, p) for p in configs]
    )
    for loser in losers:
        problems.append(
            Problem(
                source=loser.ctx.source,
                obj=loser.ctx.obj,
                message=f"only one MeshConfig is allowed; MeshConfig {winner.meta.name} "
                f"({winner.ctx.source}) takes precedence and this one is ignored",
            )
        )
    return [winner]
