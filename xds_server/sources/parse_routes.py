"""Parse Gateway API ``GRPCRoute`` and ``HTTPRoute`` attached to Services (GAMMA).

Only parents of ``group: ""``, ``kind: Service`` are mesh parents; other parents
(Gateways) belong to some gateway controller and are skipped. gRPC method matches
are normalised to path matches (:func:`grpc_method_path`) so translation sees one
kind of match. Filters, retries and session persistence are reported as not
supported yet rather than silently dropped. The API server's defaults are applied
(an HTTPRoute rule without matches matches prefix ``/``), so a route read from a
file and the same route read back from Kubernetes give equal models.
"""

from __future__ import annotations

import contextlib
import re
from typing import Literal, cast

from meshlib.contract.regex import regex_error
from xds_server.model import (
    BackendRef,
    HeaderMatch,
    ObjectRef,
    ParentRef,
    PathMatch,
    Route,
    RouteMatch,
    RouteRule,
)
from xds_server.sources.fields import (
    DNS_LABEL,
    Fields,
    ObjectContext,
    one_of,
    pattern,
    quote,
)
from xds_server.sources.parse_core import Metadata

__all__ = [
    "grpc_method_path",
    "parse_route",
]

RouteKind = Literal["GRPCRoute", "HTTPRoute"]
_PathType = Literal["Exact", "PathPrefix", "RegularExpression"]

_SPEC_FIELDS = frozenset({"parentRefs", "hostnames", "rules"})
_PARENT_FIELDS = frozenset({"group", "kind", "namespace", "name", "sectionName", "port"})
_RULE_FIELDS: dict[str, frozenset[str]] = {
    "GRPCRoute": frozenset(
        {"name", "matches", "filters", "backendRefs", "sessionPersistence", "timeouts"}
    ),
    "HTTPRoute": frozenset(
        {"name", "matches", "filters", "backendRefs", "sessionPersistence", "timeouts", "retry"}
    ),
}
_MATCH_FIELDS: dict[str, frozenset[str]] = {
    "GRPCRoute": frozenset({"method", "headers"}),
    "HTTPRoute": frozenset({"path", "headers", "queryParams", "method"}),
}
_BACKEND_FIELDS = frozenset({"group", "kind", "name", "namespace", "port", "weight", "filters"})
_METHOD_FIELDS = frozenset({"type", "service", "method"})
_HEADER_FIELDS = frozenset({"type", "name", "value"})
_PATH_FIELDS = frozenset({"type", "value"})
_TIMEOUT_FIELDS = frozenset({"request", "backendRequest"})

_GATEWAY_GROUP = "gateway.networking.k8s.io"
_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
_MATCH_TYPES = ("Exact", "RegularExpression")
_PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
_MAX_WEIGHT = 1_000_000
# Gateway API validation patterns (GRPCMethodMatch, HTTPHeaderName, Hostname).
_GRPC_SERVICE = re.compile(r"(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*")
_GRPC_METHOD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_HOSTNAME = re.compile(r"(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_ANY_SEGMENT = "[^/]+"


def grpc_method_path(
    match_type: Literal["Exact", "RegularExpression"], service: str, method: str
) -> PathMatch:
    """A GRPCRoute ``method`` match as a match on the HTTP/2 ``:path``.

    =================  ========  =======  ======================================
    type               service   method   path match
    =================  ========  =======  ======================================
    Exact              ✓         ✓        Exact ``/svc/method``
    Exact              ✓                  PathPrefix ``/svc/``
    Exact                        ✓        RegularExpression ``/[^/]+/method``
    RegularExpression  any       any      RegularExpression ``/(?:svc)/(?:method)``
    =================  ========  =======  ======================================

    Missing parts of a RegularExpression match become ``[^/]+``. An Exact match
    needs a service or a method (:class:`ValueError` otherwise).
    """
    if match_type == "RegularExpression":
        # Each part grouped, so an alternation stays inside its segment
        # (``a|b`` as the service must not swallow the method).
        return PathMatch(
            type="RegularExpression",
            value=f"/{f'(?:{service})' if service else _ANY_SEGMENT}"
                  f"/{f'(?:{method})' if method else _ANY_SEGMENT}",
        )
    if service and method:
        return PathMatch(type="Exact", value=f"/{service}/{method}")
    if service:
        return PathMatch(type="PathPrefix", value=f"/{service}/")
    if method:
        return PathMatch(type="RegularExpression", value=f"/{_ANY_SEGMENT}/{re.escape(method)}")
    raise ValueError("an Exact method match needs a service, a method or both")


def parse_route(ctx: ObjectContext, obj: Fields, meta: Metadata, kind: RouteKind) -> Route:
    """A ``GRPCRoute`` or ``HTTPRoute``: Service parents, hostnames and rules."""
    spec = obj.child("spec", _SPEC_FIELDS, required=True)
    if spec is None:
        return Route(kind=kind, name=meta.name, namespace=meta.namespace, parent_refs=(), rules=())
    parents = _parent_refs(ctx, spec, meta)
    hostnames = spec.strings("hostnames", check=pattern(_HOSTNAME, "a hostname"))
    rules = tuple(
        _rule(ctx, rule, meta, kind) for rule in spec.children("rules", _RULE_FIELDS[kind])
    )
    return Route(
        kind=kind,
        name=meta.name,
        namespace=meta.namespace,
        parent_refs=parents,
        rules=rules,
        hostnames=hostnames,
        ref=ObjectRef(kind=kind, namespace=meta.namespace, name=meta.name, source=ctx.source),
    )


def _parent_refs(ctx: ObjectContext, spec: Fields, meta: Metadata) -> tuple[ParentRef, ...]:
    parents: list[ParentRef] = []
    service_parents = 0
    for entry in spec.children("parentRefs", _PARENT_FIELDS):
        kind = entry.string("kind", "Gateway")
        group = entry.string("group", _GATEWAY_GROUP)
        name = entry.string("name", required=True)
        namespace = entry.string(
            "namespace", meta.namespace, check=pattern(DNS_LABEL, "a DNS label")
        )
        port = entry.integer("port", None, minimum=1, maximum=65535)
        # GAMMA parents are core Services (group ""). The API server defaults an
        # omitted group to gateway.networking.k8s.io, which has no Service kind; so
        # read `kind: Service` without a group as the core Service, from a file and
        # from Kubernetes alike.
        if kind != "Service" or group not in ("", _GATEWAY_GROUP):
            continue  # a Gateway (or other) parent: not ours
        service_parents += 1
        if entry.has("sectionName"):
            entry.error("sectionName", "is not supported for Service parents yet; use port")
        if name:
            ports: tuple[tuple[str, int | str], ...] = (
                ((entry.at("port"), port),) if port is not None else ()
            )
            ctx.refer(entry.at("name"), "parentRef", namespace, name, ports)
            parents.append(ParentRef(name=name, namespace=namespace, port=port))
    if not service_parents:
        ctx.error("spec.parentRefs", "attaches to no Service (GAMMA parentRefs kind: Service)")
    return tuple(parents)


def _rule(ctx: ObjectContext, rule: Fields, meta: Metadata, kind: RouteKind) -> RouteRule:
    name = rule.string("name", check=pattern(DNS_LABEL, "a DNS label"))
    matches = tuple(
        _grpc_match(m) if kind == "GRPCRoute" else _http_match(m)
        for m in rule.children("matches", _MATCH_FIELDS[kind])
    )
    if kind == "HTTPRoute" and not rule.has("matches"):
        matches = (RouteMatch(path=PathMatch(type="PathPrefix", value="/")),)
    _filters(rule)
    entries = rule.children("backendRefs", _BACKEND_FIELDS)
    backends = tuple(_backend_ref(ctx, b, meta) for b in entries)
    timeout = backend_timeout = None
    if kind == "GRPCRoute" and rule.has("timeouts"):
        rule.error("timeouts", "is an HTTPRoute field; set timeout in a TrafficPolicy instead")
    timeouts = rule.child("timeouts", _TIMEOUT_FIELDS) if kind == "HTTPRoute" else None
    if timeouts:
        timeout = timeouts.duration("request", None)
        backend_timeout = timeouts.duration("backendRequest", None)
        if timeout and backend_timeout and backend_timeout > timeout:
            timeouts.error(
                "backendRequest", "must not be longer than the request timeout (timeouts.request)"
            )
    rule.unsupported("retry", "HTTPRoute retry")
    rule.unsupported("sessionPersistence", "sessionPersistence")
    return RouteRule(
        matches=matches,
        backend_refs=backends,
        timeout=timeout,
        backend_request_timeout=backend_timeout,
        name=name,
    )


def _filters(owner: Fields) -> None:
    raw = owner.raw("filters")
    if raw is None:
        return
    if not isinstance(raw, list):
        owner.error("filters", "must be a list")
        return
    for i, item in enumerate(raw):
        kind = item.get("type") if isinstance(item, dict) else None
        what = f"filter type {quote(kind)}" if isinstance(kind, str) else "a filter"
        owner.ctx.error(f"{owner.at('filters')}[{i}]", f"{what} is not supported yet")


def _backend_ref(ctx: ObjectContext, entry: Fields, meta: Metadata) -> BackendRef:
    group = entry.string("group", "")
    kind = entry.string("kind", "Service")
    if group != "" or kind != "Service":
        what = f"{group}/{kind}" if group else kind
        entry.error("kind", f'only Service backends (group "") are supported, got {what}')
    name = entry.string("name", required=True)
    namespace = entry.string("namespace", meta.namespace, check=pattern(DNS_LABEL, "a DNS label"))
    port = entry.integer("port", None, minimum=1, maximum=65535)
    if port is None and not entry.has("port"):
        entry.error("port", "is required for a Service backend")
    weight = entry.integer("weight", 1, minimum=0, maximum=_MAX_WEIGHT)
    _filters(entry)
    if name:
        ports: tuple[tuple[str, int | str], ...] = (
            ((entry.at("port"), port),) if port is not None else ()
        )
        ctx.refer(entry.at("name"), "backendRef", namespace, name, ports)
    return BackendRef(name=name, namespace=namespace, port=port, weight=weight)


def _header_matches(match: Fields, key: str, *, lower: bool) -> tuple[HeaderMatch, ...]:
    out: list[HeaderMatch] = []
    for header in match.children(key, _HEADER_FIELDS):
        match_type = header.string("type", "Exact", check=one_of(_MATCH_TYPES))
        check = pattern(_HEADER_NAME, "a header name") if key == "headers" else None
        name = header.string("name", required=True, check=check)
        value_check = _regex_check if match_type == "RegularExpression" else None
        value = header.string("value", required=True, check=value_check)
        out.append(
            HeaderMatch(
                name=name.lower() if lower else name,
                value=value,
                type=cast(Literal["Exact", "RegularExpression"], match_type),
            )
        )
    return tuple(out)


def _grpc_match(match: Fields) -> RouteMatch:
    path = None
    method = match.child("method", _METHOD_FIELDS)
    if method:
        match_type = method.string("type", "Exact", check=one_of(_MATCH_TYPES))
        if match_type == "Exact":
            service = method.string(
                "service", check=pattern(_GRPC_SERVICE, "a gRPC service name like pkg.Service")
            )
            name = method.string("method", check=pattern(_GRPC_METHOD, "a gRPC method name"))
        else:
            service = method.string("service", check=_regex_check)
            name = method.string("method", check=_regex_check)
        if match_type == "Exact" and not (method.has("service") or method.has("method")):
            match.error("method", "must set service, method or both")
        else:
            kind = cast(Literal["Exact", "RegularExpression"], match_type)
            # ValueError: service and method were both invalid, and are reported.
            with contextlib.suppress(ValueError):
                path = grpc_method_path(kind, service, name)
    return RouteMatch(path=path, headers=_header_matches(match, "headers", lower=True))


def _http_match(match: Fields) -> RouteMatch:
    path = PathMatch(type="PathPrefix", value="/")
    spec = match.child("path", _PATH_FIELDS)
    if spec:
        path_type = spec.string("type", "PathPrefix", check=one_of(_PATH_TYPES))
        check = _regex_check if path_type == "RegularExpression" else _absolute_path
        value = spec.string("value", "/", check=check)
        path = PathMatch(type=cast(_PathType, path_type), value=value)
    return RouteMatch(
        path=path,
        headers=_header_matches(match, "headers", lower=True),
        query_params=_header_matches(match, "queryParams", lower=False),
        method=match.string("method", None, check=one_of(_HTTP_METHODS)),
    )


def _absolute_path(value: str) -> str | None:
    return None if value.startswith("/") else f'must start with "/", got {quote(value)}'


def _regex_check(value: str) -> str | None:
    """Exactly what RE2 accepts, as gRPC and Envoy (no backreferences, no lookaround)."""
    error = regex_error(value)
    if error is not None:
        return f"must be a valid RE2 regular expression ({error}), got {quote(value)}"
    return None
