"""Listeners: ``api_listener``s and xDS-server listeners for gRPC, a socket for Envoy.

* Proxyless gRPC clients ask for a Listener named after their target; each is an
  ``api_listener`` whose HttpConnectionManager points at the port's RouteConfiguration
  over RDS (gRFC A27).
* gRPC xDS-enabled servers ask for ``grpc/server?xds.resource.listening_address=
  ip:port`` (gRFC A36); they get a socket Listener at that very address (gRPC checks it
  matches) whose inline route answers every call locally (``non_forwarding_action``),
  with the mTLS and RBAC of the Services whose endpoints use that address.
* Envoy ignores ``api_listener``s; it gets one socket Listener, ``outbound``.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, substitution_format_string_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.v3 import percent_pb2, token_bucket_pb2
from google.protobuf import any_pb2, struct_pb2, wrappers_pb2

from xds_server.model import MeshModel, RateLimit, Service
from xds_server.node import NodeGroup
from xds_server.translate._protos import (
    ads_config_source,
    duration,
    fault_filter,
    pack,
    router_filter,
)
from xds_server.translate.names import (
    ENVOY_OUTBOUND_LISTENER,
    ENVOY_OUTBOUND_ROUTE,
    LOCAL_RATE_LIMIT_FILTER,
    default_service_port,
    listener_names,
    route_config_name,
    server_listener_name,
)
from xds_server.translate.rbac import rbac_filters
from xds_server.translate.security import (
    InboundSecurity,
    access_policies_by_service,
    downstream_tls_socket,
    merge_inbound,
    service_inbound_security,
)

__all__ = [
    "HCM_FILTER",
    "envoy_outbound_listener",
    "grpc_api_listeners",
    "grpc_server_listener",
    "grpc_server_listeners",
    "observe",
    "server_addresses",
    "server_hcm",
]

HCM_FILTER = "envoy.filters.network.http_connection_manager"
ACCESS_LOG_NAME = "envoy.access_loggers.stdout"
#: The JSON fields of Envoy's access log lines: the same names as meshlib's.
ENVOY_ACCESS_LOG_FORMAT = {
    "start_time": "%START_TIME%",
    "kind": "envoy",
    "protocol": "%PROTOCOL%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": "%GRPC_STATUS%",
    "duration_ms": "%DURATION%",
    "request_bytes": "%BYTES_RECEIVED%",
    "response_bytes": "%BYTES_SENT%",
    "upstream": "%UPSTREAM_HOST%",
    "source_identity": "%DOWNSTREAM_PEER_URI_SAN%",
    "traceparent": "%REQ(TRACEPARENT)%",
}
_ANY_ADDRESSES = ("0.0.0.0", "::")
_HCM = hcm_pb2.HttpConnectionManager


def grpc_api_listeners(model: MeshModel, group: NodeGroup,
                       services: Iterable[Service] | None = None
                       ) -> dict[str, listener_pb2.Listener]:
    """One ``api_listener`` per target form of every Service port (see ``listener_names``);
    of ``services`` only, when given."""
    domain = model.mesh_config.cluster_domain
    out: dict[str, listener_pb2.Listener] = {}
    for service in model.services if services is None else services:
        default_port = default_service_port(service)
        for port in service.distinct_ports:
            hcm = _rds_hcm(route_config_name(service, port.port, cluster_domain=domain))
            observe(hcm, model.mesh_config.tracing_sampling, model.mesh_config.access_logs)
            hcm = pack(hcm)
            for name in listener_names(service, port.port, group.namespace, default_port,
                                       cluster_domain=domain):
                out[name] = listener_pb2.Listener(
                    name=name, api_listener=api_listener_pb2.ApiListener(api_listener=hcm))
    return out


def server_addresses(model: MeshModel, service: Service) -> tuple[tuple[str, int], ...]:
    """Where ``service``'s backends may listen: every ``ip:port`` of its EndpointSlices,
    plus ``0.0.0.0:port`` and ``[::]:port`` for each endpoint port (a server may bind
    either), sorted by port then address."""
    addresses: set[tuple[str, int]] = set()
    for endpoint_slice in model.endpoint_slices_for(service):
        if endpoint_slice.address_type == "FQDN":
            continue
        for port in endpoint_slice.ports:
            addresses.update((any_address, port.port) for any_address in _ANY_ADDRESSES)
            for endpoint in endpoint_slice.endpoints:
                addresses.update((address, port.port) for address in endpoint.addresses)
    return tuple(sorted(addresses, key=lambda a: (a[1], a[0])))


def grpc_server_listeners(model: MeshModel, group: NodeGroup
                          ) -> dict[str, listener_pb2.Listener]:
    """Listeners for gRPC xDS servers on every address of :func:`server_addresses`.

    Each enforces the :class:`~xds_server.translate.security.InboundSecurity` of the
    Services whose endpoints use its address.
    """
    policies = access_policies_by_service(model)
    parts_at: dict[tuple[str, int], list[InboundSecurity]] = {}
    for service in model.services:
        addresses = server_addresses(model, service)
        if addresses:
            own = service_inbound_security(model, service, policies.get(service.key, ()))
            for address in addresses:
                parts_at.setdefault(address, []).append(own)
    hcms: dict[InboundSecurity, any_pb2.Any] = {}  # most addresses share one
    out: dict[str, listener_pb2.Listener] = {}
    for (address, port), parts in sorted(parts_at.items(),
                                         key=lambda item: (item[0][1], item[0][0])):
        security = merge_inbound(parts)
        if security not in hcms:
            hcms[security] = server_hcm(security)
        listener = grpc_server_listener(address, port, security, tls=group.tls,
                                        hcm=hcms[security])
        out[listener.name] = listener
    return out


def grpc_server_listener(address: str, port: int, security: InboundSecurity, *,
                         tls: bool, hcm: any_pb2.Any | None = None) -> listener_pb2.Listener:
    """The Listener a gRPC xDS server on ``address:port`` asks for (gRFC A36).

    ``tls`` (the node can do mTLS): STRICT and PERMISSIVE get a DownstreamTlsContext,
    requiring a client certificate or not (see ``downstream_tls_socket``). The RBAC
    filters apply whatever the mode: without TLS, callers have no identity. ``hcm`` is
    :func:`server_hcm` of ``security``, when the caller has it.
    """
    name = server_listener_name(address, port)
    listener = _socket_listener(name, address, port, hcm or server_hcm(security),
                                base_pb2.INBOUND)
    if tls and security.mode != "DISABLE":
        listener.filter_chains[0].transport_socket.CopyFrom(
            downstream_tls_socket(require_client_certificate=security.mode == "STRICT"))
    return listener


def server_hcm(security: InboundSecurity) -> any_pb2.Any:
    """The packed HttpConnectionManager of a server Listener: RBAC, the local rate
    limit, then the router."""
    filters = rbac_filters(security.policies, security.trust_domain)
    if security.rate_limit is not None:
        filters.append(local_rate_limit_filter(security.rate_limit))
    hcm = _server_hcm(filters)
    observe(hcm, security.tracing_sampling, security.access_logs)
    return pack(hcm)


def observe(hcm: hcm_pb2.HttpConnectionManager, sampling: float, access_logs: bool) -> None:
    """MeshConfig's tracing and access logs on an HttpConnectionManager, in Envoy's own
    fields: ``tracing.random_sampling`` (percent of requests that start a trace) and an
    ``access_log`` writing JSON lines to stdout. meshlib reads the same two fields;
    gRPC's xDS client ignores both."""
    hcm.tracing.random_sampling.value = round(sampling * 100, 6)
    if access_logs:
        hcm.access_log.append(access_log())


def access_log() -> accesslog_pb2.AccessLog:
    """Envoy's stdout access logger with JSON lines shaped like meshlib's
    (docs/telemetry.md)."""
    fields = struct_pb2.Struct()
    fields.update(ENVOY_ACCESS_LOG_FORMAT)
    log_format = substitution_format_string_pb2.SubstitutionFormatString(json_format=fields)
    return accesslog_pb2.AccessLog(
        name=ACCESS_LOG_NAME, typed_config=pack(stream_pb2.StdoutAccessLog(
            log_format=log_format)))


def local_rate_limit_filter(limit: RateLimit) -> hcm_pb2.HttpFilter:
    """TrafficPolicy ``rateLimit`` as Envoy's ``LocalRateLimit`` HTTP filter.

    The bucket holds ``burst`` tokens and gains ``requestsPerSecond``: one token per
    ``1/rate`` s for fractional rates, else ``rate`` tokens per second. gRPC servers
    do not implement the filter, so it is optional (they skip it); meshlib servers
    enforce it, one bucket per caller identity.
    """
    rate = limit.requests_per_second
    if rate >= 1 and rate == int(rate):
        tokens, interval = int(rate), 1.0
    else:
        tokens, interval = 1, 1.0 / rate
    always = base_pb2.RuntimeFractionalPercent(default_value=percent_pb2.FractionalPercent(
        numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED))
    config = local_rate_limit_pb2.LocalRateLimit(
        stat_prefix="inbound_rate_limit",
        token_bucket=token_bucket_pb2.TokenBucket(
            max_tokens=limit.burst, tokens_per_fill=wrappers_pb2.UInt32Value(value=tokens),
            fill_interval=duration(interval)),
        filter_enabled=always, filter_enforced=always)
    return hcm_pb2.HttpFilter(name=LOCAL_RATE_LIMIT_FILTER, typed_config=pack(config),
                              is_optional=True)


def envoy_outbound_listener(model: MeshModel, group: NodeGroup) -> listener_pb2.Listener:
    """Envoy's ``outbound`` Listener on ``0.0.0.0:<outbound port>``, routes over RDS.

    The port is the node's (metadata ``OUTBOUND_PORT``) or the MeshConfig default.
    """
    port = group.outbound_port or model.mesh_config.sidecar_outbound_port
    hcm = _rds_hcm(ENVOY_OUTBOUND_ROUTE)
    hcm.codec_type = _HCM.AUTO
    hcm.stat_prefix = "outbound"
    observe(hcm, model.mesh_config.tracing_sampling, model.mesh_config.access_logs)
    return _socket_listener(ENVOY_OUTBOUND_LISTENER, "0.0.0.0", port, pack(hcm),
                            base_pb2.OUTBOUND)


def _rds_hcm(route_name: str) -> hcm_pb2.HttpConnectionManager:
    return _HCM(
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=route_name),
        http_filters=[fault_filter(), router_filter()],
    )


def _server_hcm(filters: list[hcm_pb2.HttpFilter]) -> hcm_pb2.HttpConnectionManager:
    """Server side: one inline virtual host for every authority, served locally, behind
    ``filters`` (RBAC) and the router.

    gRFC A36: a server route must carry ``non_forwarding_action``; any other action
    fails the matching calls with UNAVAILABLE.
    """
    route = rc_pb2.Route(match=rc_pb2.RouteMatch(prefix=""),
                         non_forwarding_action=rc_pb2.NonForwardingAction())
    return _HCM(
        stat_prefix="inbound",
        route_config=route_pb2.RouteConfiguration(
            name="inbound",
            virtual_hosts=[rc_pb2.VirtualHost(name="inbound", domains=["*"], routes=[route])],
        ),
        http_filters=[*filters, router_filter()],
    )


def _socket_listener(name: str, address: str, port: int, hcm: any_pb2.Any,
                     direction: int) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=address, port_value=port)),
        traffic_direction=direction,
        filter_chains=[listener_components_pb2.FilterChain(
            filters=[listener_components_pb2.Filter(name=HCM_FILTER, typed_config=hcm)])],
    )
