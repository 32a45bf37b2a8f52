"""RouteConfiguration (RDS): virtual hosts, routes, matches and actions.

Decoding follows gRFC A28 where it decides something: a route without a path
specifier is invalid; routes whose action names a cluster by header or by plugin are
skipped (gRPC ignores them too); weighted clusters must have a positive total weight.
A route with neither a ``route`` action, ``direct_response`` nor
``non_forwarding_action`` (e.g. ``redirect``) is kept: calls matching it fail
UNAVAILABLE, as in gRPC. A virtual host's retry policy and fault override apply to
its routes that have none of their own.

Example::

    update = decode_route_config(any_msg)
    vhost = pick_virtual_host(update.virtual_hosts, "reviews:50051")
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2

from meshlib.xds._matchers import (
    HeaderMatcher,
    QueryParameterMatcher,
    compile_regex,
    decode_header_matcher,
    decode_query_matcher,
)
from meshlib.xds._resources import ROUTE, ResourceValidationError, fraction_percent, seconds, unpack
from meshlib.xds._route_policies import (
    FaultConfig,
    HashPolicy,
    RetryPolicy,
    decode_fault,
    decode_hash_policy,
    decode_retry_policy,
)

__all__ = [
    "ClusterWeight",
    "Route",
    "RouteAction",
    "RouteConfigUpdate",
    "RouteMatch",
    "VirtualHost",
    "decode_route_config",
    "decode_route_configuration",
]

_MAX_TOTAL_WEIGHT = 0xFFFFFFFF


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteMatch:
    """Which calls a route takes: exactly one of ``prefix``/``path``/``regex`` is set."""

    prefix: str | None = None
    path: str | None = None
    regex: str | None = None
    case_sensitive: bool = True
    headers: tuple[HeaderMatcher, ...] = ()
    query_parameters: tuple[QueryParameterMatcher, ...] = ()
    fraction_percent: float | None = None  # runtime_fraction: match this % of calls


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterWeight:
    """One backend of a route and its weight (1 for a single-cluster route)."""

    name: str
    weight: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteAction:
    """Forward to ``clusters`` (pick by weight), with the route's call policies.

    ``timeout`` is Envoy's ``timeout`` (None: no limit). ``max_stream_duration`` is what
    gRPC caps the deadline with (gRFC A31): ``grpc_timeout_header_max`` when set, else
    ``max_stream_duration``.
    """

    clusters: tuple[ClusterWeight, ...]
    total_weight: int
    timeout: float | None = None
    max_stream_duration: float | None = None
    retry_policy: RetryPolicy | None = None
    hash_policies: tuple[HashPolicy, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One route: its match and what to do with the calls it takes.

    At most one of ``action``, ``direct_response_status`` and ``non_forwarding`` is set;
    none means "fail the call UNAVAILABLE".
    """

    name: str
    match: RouteMatch
    action: RouteAction | None = None
    direct_response_status: int | None = None
    non_forwarding: bool = False
    fault: FaultConfig | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualHost:
    """Routes for calls whose authority matches one of ``domains``."""

    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteConfigUpdate:
    """A decoded RouteConfiguration."""

    name: str
    virtual_hosts: tuple[VirtualHost, ...]


def decode_route_config(any_msg: any_pb2.Any) -> RouteConfigUpdate:
    """Decode and validate one RDS resource; raises :class:`ResourceValidationError`."""
    return decode_route_configuration(unpack(any_msg, route_pb2.RouteConfiguration, ROUTE))


def decode_route_configuration(proto: route_pb2.RouteConfiguration) -> RouteConfigUpdate:
    """Decode a RouteConfiguration message (from RDS or inline in a Listener)."""
    name = proto.name
    if not name:
        raise ResourceValidationError("RouteConfiguration has no name", type_url=ROUTE)
    vhosts = tuple(_virtual_host(v, f"virtual_hosts[{i}]", name)
                   for i, v in enumerate(proto.virtual_hosts))
    return RouteConfigUpdate(name=name, virtual_hosts=vhosts)


def _virtual_host(proto: rc_pb2.VirtualHost, field: str, name: str) -> VirtualHost:
    if not proto.domains:
        raise ResourceValidationError(f"{field} ({proto.name}): no domains",
                                      type_url=ROUTE, resource_name=name)
    retry = None
    if proto.HasField("retry_policy"):
        retry = decode_retry_policy(proto.retry_policy, f"{field}.retry_policy", name)
    fault = decode_fault(proto.typed_per_filter_config, f"{field}.typed_per_filter_config", name)
    routes = []
    for i, route in enumerate(proto.routes):
        decoded = _route(route, f"{field}.routes[{i}]", name, retry, fault)
        if decoded is not None:
            routes.append(decoded)
    return VirtualHost(name=proto.name, domains=tuple(d.lower() for d in proto.domains),
                       routes=tuple(routes))


def _route(proto: rc_pb2.Route, field: str, name: str, vhost_retry: RetryPolicy | None,
           vhost_fault: FaultConfig | None) -> Route | None:
    match = _match(proto.match, f"{field}.match", name)
    fault = decode_fault(proto.typed_per_filter_config, f"{field}.typed_per_filter_config",
                         name) or vhost_fault
    kind = proto.WhichOneof("action")
    if kind == "route":
        action = _action(proto.route, f"{field}.route", name, vhost_retry)
        if action is None:
            return None
        return Route(name=proto.name, match=match, action=action, fault=fault)
    if kind == "direct_response":
        return Route(name=proto.name, match=match, fault=fault,
                     direct_response_status=proto.direct_response.status)
    return Route(name=proto.name, match=match, fault=fault,
                 non_forwarding=kind == "non_forwarding_action")


def _match(proto: rc_pb2.RouteMatch, field: str, name: str) -> RouteMatch:
    kind = proto.WhichOneof("path_specifier")
    prefix = path = regex = None
    if kind == "prefix":
        prefix = proto.prefix
    elif kind == "path":
        path = proto.path
    elif kind == "safe_regex":
        regex = proto.safe_regex.regex
        compile_regex(regex, f"{field}.safe_regex", name)
    else:
        raise ResourceValidationError(f"{field}: unsupported path specifier {kind or 'unset'}",
                                      type_url=ROUTE, resource_name=name)
    fraction = None
    if proto.HasField("runtime_fraction"):
        fraction = fraction_percent(proto.runtime_fraction.default_value)
    return RouteMatch(
        prefix=prefix, path=path, regex=regex,
        case_sensitive=proto.case_sensitive.value if proto.HasField("case_sensitive") else True,
        headers=tuple(decode_header_matcher(h, f"{field}.headers[{i}]", name)
                      for i, h in enumerate(proto.headers)),
        query_parameters=tuple(decode_query_matcher(q, f"{field}.query_parameters[{i}]", name)
                               for i, q in enumerate(proto.query_parameters)),
        fraction_percent=fraction,
    )


def _action(proto: rc_pb2.RouteAction, field: str, name: str,
            vhost_retry: RetryPolicy | None) -> RouteAction | None:
    kind = proto.WhichOneof("cluster_specifier")
    if kind == "cluster":
        if not proto.cluster:
            raise ResourceValidationError(f"{field}.cluster: empty cluster name",
                                          type_url=ROUTE, resource_name=name)
        clusters: tuple[ClusterWeight, ...] = (ClusterWeight(name=proto.cluster, weight=1),)
    elif kind == "weighted_clusters":
        clusters = tuple(ClusterWeight(name=c.name, weight=c.weight.value)
                         for c in proto.weighted_clusters.clusters)
        if any(not c.name for c in clusters):
            raise ResourceValidationError(f"{field}.weighted_clusters: empty cluster name",
                                          type_url=ROUTE, resource_name=name)
        total = sum(c.weight for c in clusters)
        if not 0 < total <= _MAX_TOTAL_WEIGHT:
            raise ResourceValidationError(
                f"{field}.weighted_clusters: total weight {total} not in (0, 2^32)",
                type_url=ROUTE, resource_name=name)
        clusters = tuple(c for c in clusters if c.weight > 0)
    else:
        return None  # cluster_header / cluster_specifier_plugin: ignored, as by gRPC
    timeout = None
    if proto.HasField("timeout"):
        timeout = seconds(proto.timeout, f"{field}.timeout", type_url=ROUTE, name=name) or None
    max_stream = None
    if proto.HasField("max_stream_duration"):
        msd = proto.max_stream_duration
        chosen = "grpc_timeout_header_max" if msd.HasField("grpc_timeout_header_max") else (
            "max_stream_duration" if msd.HasField("max_stream_duration") else None)
        if chosen is not None:
            max_stream = seconds(getattr(msd, chosen), f"{field}.max_stream_duration.{chosen}",
                                 type_url=ROUTE, name=name) or None
    retry = vhost_retry
    if proto.HasField("retry_policy"):
        retry = decode_retry_policy(proto.retry_policy, f"{field}.retry_policy", name)
    hashes = tuple(h for h in map(decode_hash_policy, proto.hash_policy) if h is not None)
    return RouteAction(clusters=clusters, total_weight=sum(c.weight for c in clusters),
                       timeout=timeout, max_stream_duration=max_stream, retry_policy=retry,
                       hash_policies=hashes)
