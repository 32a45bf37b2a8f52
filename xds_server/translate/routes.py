"""RouteConfigurations: GAMMA GRPCRoute/HTTPRoute rules and TrafficPolicy → xDS routes.

One route list per Service port, shared by both outputs: proxyless gRPC gets one
RouteConfiguration per Service port (named by :func:`route_config_name`), Envoy gets
the same lists as VirtualHosts of its single ``outbound`` RouteConfiguration.

Rules become one xDS Route per (rule, match), ordered by Gateway API precedence
(https://gateway-api.sigs.k8s.io/reference/spec/#httprouterule). With no route
attached to a port, its one route sends everything to the Service's own cluster.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

from xds_server.model import (
    FaultInjection,
    HeaderMatch,
    MeshModel,
    RetryPolicy,
    Route,
    RouteMatch,
    RouteRule,
    Service,
    ServicePort,
    TrafficPolicy,
)
from xds_server.node import NodeGroup
from xds_server.translate._protos import duration, pack, percent
from xds_server.translate.names import (
    FAULT_FILTER,
    cluster_name,
    default_service_port,
    listener_names,
    route_config_name,
)

__all__ = [
    "MIN_RETRY_BACKOFF",
    "grpc_route_configs",
    "service_routes",
    "virtual_host",
]

# Gateway API: a rule without backends answers 500 (HTTPRoute) or UNAVAILABLE
# (GRPCRoute). Envoy turns a local 503 into grpc-status UNAVAILABLE for gRPC callers;
# gRPC fails any RPC matching a non-forwarding route action with UNAVAILABLE
# ("Matching route has inappropriate action"), so direct_response works for both.
_NO_BACKEND_STATUS = {"GRPCRoute": 503, "HTTPRoute": 500}

# grpcio 1.85 leaves some retries pending until the deadline when the jittered
# backoff rounds down to 0 ms (measured with a 1 ms base); 5 ms never does.
MIN_RETRY_BACKOFF = 0.005

_ROOT_PREFIXES = ("", "/")
_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$#&~-")


def grpc_route_configs(model: MeshModel, group: NodeGroup,
                       services: Iterable[Service] | None = None
                       ) -> dict[str, route_pb2.RouteConfiguration]:
    """One RouteConfiguration per Service port (of ``services`` only, when given), each
    with a single VirtualHost."""
    domain = model.mesh_config.cluster_domain
    out: dict[str, route_pb2.RouteConfiguration] = {}
    for service in model.services if services is None else services:
        for port in service.distinct_ports:
            name = route_config_name(service, port.port, cluster_domain=domain)
            out[name] = route_pb2.RouteConfiguration(
                name=name, virtual_hosts=[virtual_host(model, service, port, group.namespace)]
            )
    return out


def virtual_host(model: MeshModel, service: Service, port: ServicePort,
                 group_namespace: str) -> rc_pb2.VirtualHost:
    """The VirtualHost of ``service:port``; its domains are the Listener names.

    gRPC picks the virtual host by the channel's authority, which is the target
    (and so the Listener name) the application wrote.
    """
    domain = model.mesh_config.cluster_domain
    return rc_pb2.VirtualHost(
        name=route_config_name(service, port.port, cluster_domain=domain),
        domains=listener_names(service, port.port, group_namespace,
                               default_service_port(service), cluster_domain=domain),
        routes=service_routes(model, service, port),
    )


def service_routes(model: MeshModel, service: Service, port: ServicePort) -> list[rc_pb2.Route]:
    """The ordered xDS routes for calls to ``service:port``."""
    policy = model.traffic_policy_for(service)
    attached = _attached_routes(model, service, port.port)
    if not attached:
        own = cluster_name(service, port.port, cluster_domain=model.mesh_config.cluster_domain)
        catch_all = rc_pb2.Route(name="default", match=rc_pb2.RouteMatch(prefix=""))
        _forward(catch_all, {own: 1}, None, policy, _hash_headers([policy]),
                 grpc_faults=port.protocol == "grpc")
        return [catch_all]
    keyed: list[tuple[tuple[object, ...], rc_pb2.Route]] = []
    for route in attached:
        for ri, rule in enumerate(route.rules):
            backends = _backends(model, rule, port.port)
            for mi, match in enumerate(rule.matches or (RouteMatch(),)):
                xroute = rc_pb2.Route(name=f"{route.namespace}/{route.name}/{ri}/{mi}",
                                      match=_match(match, grpc=route.kind == "GRPCRoute"))
                if backends:
                    grpc_faults = route.kind == "GRPCRoute" or port.protocol == "grpc"
                    hashes = _hash_headers([policy, *_backend_policies(model, rule)])
                    _forward(xroute, backends, rule, policy, hashes, grpc_faults=grpc_faults)
                else:
                    xroute.direct_response.status = _NO_BACKEND_STATUS[route.kind]
                keyed.append((_precedence(match, route, ri, mi), xroute))
    keyed.sort(key=lambda item: item[0])
    return [xroute for _, xroute in keyed]


def _attached_routes(model: MeshModel, service: Service, port: int) -> list[Route]:
    return [
        route
        for route in model.routes_for(service)
        if any(
            ref.kind == "Service" and ref.name == service.name
            and ref.namespace == service.namespace and ref.port in (None, port)
            for ref in route.parent_refs
        )
    ]


def _prefix(value: str) -> str:
    """A PathPrefix value without its trailing ``/`` (Gateway API: it is ignored)."""
    return value[:-1] if len(value) > 1 and value.endswith("/") else value


def _precedence(match: RouteMatch, route: Route, rule_index: int,
                match_index: int) -> tuple[object, ...]:
    """Gateway API order: Exact, longest PathPrefix, regex, then the root prefix.

    Regex placement is implementation-specific in the Gateway API; putting it above
    the root prefix ``/`` (which matches everything) keeps GRPCRoute method-only
    matches reachable next to a catch-all rule. Ties: method present, more headers,
    more query params, ``namespace/name`` (the model has no creation timestamps),
    rule order, match order.
    """
    path = match.path
    if path is None or (path.type == "PathPrefix" and path.value in _ROOT_PREFIXES):
        rank, length = 3, 0
    elif path.type == "Exact":
        rank, length = 0, 0
    elif path.type == "PathPrefix":
        rank, length = 1, -len(_prefix(path.value))
    else:
        rank, length = 2, 0
    return (rank, length, match.method is None, -len(match.headers), -len(match.query_params),
            route.namespace, route.name, rule_index, match_index)


def _match(match: RouteMatch, *, grpc: bool = False) -> rc_pb2.RouteMatch:
    out = rc_pb2.RouteMatch()
    path = match.path
    if path is None or (path.type == "PathPrefix" and path.value in _ROOT_PREFIXES):
        out.prefix = ""
    elif path.type == "Exact":
        out.path = path.value
    elif grpc and path.type == "PathPrefix" and path.value.endswith("/"):
        out.prefix = path.value  # a GRPCRoute service match: gRPC paths are /svc/method
    elif path.type == "PathPrefix":
        # Gateway API prefixes match whole path segments, and a trailing "/" is
        # ignored: /api and /api/ both match /api and /api/x, not /apix. gRPC has no
        # path_separated_prefix, so spell it in RE2.
        out.safe_regex.regex = _re2_escape(_prefix(path.value)) + "(/.*)?"
    else:
        out.safe_regex.regex = path.value
    out.headers.extend(_header_matcher(h) for h in match.headers)
    if match.method is not None:
        out.headers.append(_header_matcher(HeaderMatch(name=":method", value=match.method)))
    out.query_parameters.extend(
        rc_pb2.QueryParameterMatcher(name=q.name, string_match=_string_matcher(q))
        for q in match.query_params
    )
    return out


def _header_matcher(header: HeaderMatch) -> rc_pb2.HeaderMatcher:
    return rc_pb2.HeaderMatcher(name=header.name, string_match=_string_matcher(header))


def _string_matcher(match: HeaderMatch) -> string_pb2.StringMatcher:
    if match.type == "RegularExpression":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.value))
    return string_pb2.StringMatcher(exact=match.value)


def _re2_escape(text: str) -> str:
    return "".join("\\" + c if c in _RE2_SPECIAL else c for c in text)


def _backends(model: MeshModel, rule: RouteRule, parent_port: int) -> dict[str, int]:
    """Cluster name → weight for the rule's resolvable, non-zero backends, in order."""
    domain = model.mesh_config.cluster_domain
    weights: dict[str, int] = {}
    for ref in rule.backend_refs:
        if ref.weight <= 0:
            continue
        backend = model.service(ref.namespace, ref.name)
        port = ref.port if ref.port is not None else parent_port
        if backend is None or backend.port_by_number(port) is None:
            continue  # sources report unresolvable refs; never point at a missing cluster
        name = cluster_name(backend, port, cluster_domain=domain)
        weights[name] = weights.get(name, 0) + ref.weight
    return weights


def _backend_policies(model: MeshModel, rule: RouteRule) -> list[TrafficPolicy | None]:
    """The TrafficPolicies of the Services a rule sends traffic to."""
    out = []
    for ref in rule.backend_refs:
        backend = model.service(ref.namespace, ref.name)
        out.append(model.traffic_policy_for(backend) if backend is not None else None)
    return out


def _hash_headers(policies: list[TrafficPolicy | None]) -> tuple[str, ...]:
    """Headers to hash on: the parent's RING_HASH header, then its backends'.

    A backend Service with a RING_HASH policy behind a route would otherwise get a
    random hash per call (gRFC A42) and lose its stickiness.
    """
    headers: dict[str, None] = {}
    for policy in policies:
        lb = policy.load_balancer if policy is not None else None
        if lb is not None and lb.type == "RING_HASH" and lb.hash_header:
            headers[lb.hash_header] = None
    return tuple(headers)


def _forward(xroute: rc_pb2.Route, backends: dict[str, int], rule: RouteRule | None,
             policy: TrafficPolicy | None, hash_headers: tuple[str, ...], *,
             grpc_faults: bool) -> None:
    """Fill ``xroute``'s RouteAction (and fault override) from backends and the policy."""
    action = xroute.route
    # gRFC A42: gRPC hashes on header (and filter_state) policies only.
    action.hash_policy.extend(
        rc_pb2.RouteAction.HashPolicy(header=rc_pb2.RouteAction.HashPolicy.Header(header_name=h))
        for h in hash_headers
    )
    if len(backends) == 1:
        action.cluster = next(iter(backends))
    else:
        action.weighted_clusters.clusters.extend(
            rc_pb2.WeightedCluster.ClusterWeight(name=name,
                                                 weight=wrappers_pb2.UInt32Value(value=weight))
            for name, weight in backends.items()
        )
    timeout = rule.timeout if rule is not None and rule.timeout is not None else None
    if timeout is None and policy is not None:
        timeout = policy.timeout
    per_try = rule.backend_request_timeout if rule is not None else None
    retry = None
    if policy is not None and policy.retries is not None:
        retry = _retry_policy(policy.retries, per_try)
    if retry is None and per_try:
        # A single try: the backend request is the whole call.
        timeout = min(timeout, per_try) if timeout else per_try
    if timeout:
        # Envoy reads `timeout`; gRPC reads max_stream_duration, preferring
        # grpc_timeout_header_max, and caps the call deadline with it (gRFC A31).
        action.timeout.CopyFrom(duration(timeout))
        action.max_stream_duration.max_stream_duration.CopyFrom(duration(timeout))
        action.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration(timeout))
    else:
        # No limit: switch off Envoy's 15 s default, which would cut long streams.
        action.timeout.CopyFrom(duration(0))
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    if policy is not None and policy.fault_injection is not None:
        fault = _fault(policy.fault_injection, grpc_faults=grpc_faults)
        if fault is not None:
            xroute.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(fault))


def _retry_policy(retries: RetryPolicy, backend_request_timeout: float | None
                  ) -> rc_pb2.RetryPolicy | None:
    """gRFC A44: gRPC honours retry_on (status names), num_retries and retry_back_off.

    https://github.com/grpc/proposal/blob/master/A44-xds-retry.md — gRPC caps attempts
    at 5 and ignores per_try_timeout; Envoy honours all of it.
    """
    codes = [code.lower().replace("_", "-") for code in retries.retry_on]
    if retries.attempts < 2 or not codes:
        return None
    out = rc_pb2.RetryPolicy(retry_on=",".join(codes),
                             num_retries=wrappers_pb2.UInt32Value(value=retries.attempts - 1))
    if retries.base_interval > 0:
        base = max(retries.base_interval, MIN_RETRY_BACKOFF)
        out.retry_back_off.base_interval.CopyFrom(duration(base))
        out.retry_back_off.max_interval.CopyFrom(duration(max(retries.max_interval, base)))
    per_try = retries.per_try_timeout or backend_request_timeout
    if per_try:
        out.per_try_timeout.CopyFrom(duration(per_try))
    return out


def _fault(fault: FaultInjection, *, grpc_faults: bool) -> fault_pb2.HTTPFault | None:
    """gRFC A33 fault injection: a fixed delay and/or an abort, each on a percentage."""
    out = fault_pb2.HTTPFault()
    if fault.delay_percent > 0 and fault.delay > 0:
        out.delay.fixed_delay.CopyFrom(duration(fault.delay))
        out.delay.percentage.CopyFrom(percent(fault.delay_percent))
    if fault.abort_percent > 0:
        if grpc_faults:
            out.abort.grpc_status = _grpc_code(fault.abort_grpc_status)
        else:
            out.abort.http_status = fault.abort_http_status
        out.abort.percentage.CopyFrom(percent(fault.abort_percent))
    return out if out.HasField("delay") or out.HasField("abort") else None


def _grpc_code(name: str) -> int:
    code: tuple[int, str] = grpc.StatusCode[name.upper()].value
    return code[0]
