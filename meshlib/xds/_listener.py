"""Listener (LDS): the HttpConnectionManager of an ``api_listener`` (gRFC A27), or
a server's socket Listener (gRFC A36): its mTLS mode and authorization.

A client Listener's ``api_listener`` holds an HttpConnectionManager that names its
RouteConfiguration over RDS (``rds``, which must be fetched over ADS) or carries one
inline (``route_config``). Its HTTP filters must end with the router, each with a
``typed_config`` and a unique name — gRPC NACKs anything else, and so do we.

Example::

    update = decode_listener(any_msg)
    update.route_config_name      # "reviews.default.svc.cluster.local:50051"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import any_pb2

from meshlib.contract import DEFAULT_TRACING_SAMPLING, XdsError
from meshlib.xds._resources import LISTENER, ResourceValidationError, unpack
from meshlib.xds._route_config import RouteConfigUpdate, decode_route_configuration

if TYPE_CHECKING:
    from meshlib.security import AuthorizationPolicy

__all__ = ["DEFAULT_SAMPLING", "ListenerUpdate", "ServerListenerUpdate", "decode_listener"]

#: Tracing's share of calls when the HttpConnectionManager has no ``tracing`` (1 %).
DEFAULT_SAMPLING = DEFAULT_TRACING_SAMPLING

_DOWNSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
_LOCAL_RATE_LIMIT = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
_HCM_TYPE = hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
_ROUTER_TYPE = "type.googleapis.com/" + router_pb2.Router.DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerUpdate:
    """A decoded client Listener: exactly one of ``route_config_name`` (RDS) and
    ``route_config`` (inline) is set; ``http_filters`` are the filter names, in order."""

    name: str
    route_config_name: str | None = None
    route_config: RouteConfigUpdate | None = None
    http_filters: tuple[str, ...] = ()
    tracing_sampling: float = DEFAULT_SAMPLING  # share of calls that start a trace
    access_log: bool = False  # one JSON line per call


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerListenerUpdate:
    """A decoded server Listener: how the server on its address takes connections.

    ``mtls_mode``: ``STRICT`` (a DownstreamTlsContext requiring client certificates),
    ``PERMISSIVE`` (one not requiring them) or ``DISABLE`` (no transport socket).
    ``authorization`` is the RBAC policy of its HTTP filters (None: allow all).
    """

    name: str
    mtls_mode: str
    authorization: AuthorizationPolicy | None = None
    rate_limit: tuple[float, int] | None = None  # (requests per second, burst)
    tracing_sampling: float = DEFAULT_SAMPLING
    access_log: bool = False


def decode_listener(any_msg: any_pb2.Any) -> ListenerUpdate | ServerListenerUpdate:
    """Decode and validate one LDS resource; raises :class:`ResourceValidationError`."""
    listener = unpack(any_msg, listener_pb2.Listener, LISTENER)
    name = listener.name

    def invalid(detail: str) -> ResourceValidationError:
        return ResourceValidationError(detail, type_url=LISTENER, resource_name=name)

    if not name:
        raise invalid("Listener has no name")
    if not listener.HasField("api_listener"):
        if listener.HasField("address"):
            return _server_listener(listener, invalid)
        raise invalid("neither an api_listener nor a socket listener with an address")
    try:
        hcm = unpack(listener.api_listener.api_listener, hcm_pb2.HttpConnectionManager,
                     LISTENER, name)
    except ResourceValidationError as err:
        raise invalid(f"api_listener: {err.detail}") from err
    filters = _http_filters(hcm, invalid)
    kind = hcm.WhichOneof("route_specifier")
    if kind == "rds":
        source = hcm.rds.config_source
        if source.WhichOneof("config_source_specifier") not in ("ads", "self"):
            raise invalid("rds.config_source: only ads and self are supported")
        if not hcm.rds.route_config_name:
            raise invalid("rds.route_config_name is empty")
        return ListenerUpdate(name=name, route_config_name=hcm.rds.route_config_name,
                              http_filters=filters, **_observability(hcm))
    if kind == "route_config":
        try:
            inline = decode_route_configuration(hcm.route_config)
        except ResourceValidationError as err:
            raise invalid(f"inline route_config: {err.detail}") from err
        return ListenerUpdate(name=name, route_config=inline, http_filters=filters,
                              **_observability(hcm))
    raise invalid(f"HttpConnectionManager: unsupported route specifier {kind or 'unset'}")


def _server_listener(listener: listener_pb2.Listener,
                     invalid: Callable[[str], ResourceValidationError]) -> ServerListenerUpdate:
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    if not chains:
        raise invalid("server Listener has no filter chain")
    chain = chains[0]  # the translator emits one chain per server Listener
    mode = "DISABLE"
    if chain.HasField("transport_socket"):
        socket = chain.transport_socket
        if socket.typed_config.type_url.rsplit("/", 1)[-1] != _DOWNSTREAM_TLS:
            raise invalid(f"transport_socket {socket.name!r}: only DownstreamTlsContext is "
                          "supported")
        context = tls_pb2.DownstreamTlsContext()
        if not socket.typed_config.Unpack(context):
            raise invalid("transport_socket: cannot decode its DownstreamTlsContext")
        mode = "STRICT" if context.require_client_certificate.value else "PERMISSIVE"
    hcm = None
    for network_filter in chain.filters:
        if network_filter.typed_config.type_url.endswith(_HCM_TYPE):
            hcm = hcm_pb2.HttpConnectionManager()
            network_filter.typed_config.Unpack(hcm)
    if hcm is None:
        raise invalid("server Listener has no HttpConnectionManager")
    from meshlib.security import decode_rbac_filters  # servers only: RBAC protos

    try:
        authorization = decode_rbac_filters(hcm.http_filters)
    except (XdsError, ValueError) as err:
        raise invalid(f"RBAC: {err}") from err
    return ServerListenerUpdate(name=listener.name, mtls_mode=mode,
                                authorization=authorization,
                                rate_limit=_rate_limit(hcm, invalid), **_observability(hcm))


def _observability(hcm: hcm_pb2.HttpConnectionManager) -> dict[str, Any]:
    """MeshConfig's tracing share and access-log switch, from Envoy's own HCM fields:
    ``tracing.random_sampling`` (a percent) and ``access_log`` (any logger: on)."""
    sampling = DEFAULT_SAMPLING
    if hcm.HasField("tracing") and hcm.tracing.HasField("random_sampling"):
        sampling = min(max(hcm.tracing.random_sampling.value / 100.0, 0.0), 1.0)
    return {"tracing_sampling": sampling, "access_log": len(hcm.access_log) > 0}


def _rate_limit(hcm: hcm_pb2.HttpConnectionManager,
                invalid: Callable[[str], ResourceValidationError]) -> tuple[float, int] | None:
    """The LocalRateLimit filter's bucket as (tokens per second, burst), if any."""
    for http_filter in hcm.http_filters:
        if http_filter.typed_config.type_url.rsplit("/", 1)[-1] != _LOCAL_RATE_LIMIT:
            continue
        config = local_rate_limit_pb2.LocalRateLimit()
        http_filter.typed_config.Unpack(config)
        bucket = config.token_bucket
        interval = bucket.fill_interval.seconds + bucket.fill_interval.nanos / 1e9
        tokens = bucket.tokens_per_fill.value if bucket.HasField("tokens_per_fill") else 1
        if interval <= 0 or bucket.max_tokens < 1 or tokens < 1:
            raise invalid(f"{http_filter.name}: token_bucket needs max_tokens, "
                          "tokens_per_fill >= 1 and a positive fill_interval")
        return tokens / interval, bucket.max_tokens
    return None


def _http_filters(hcm: hcm_pb2.HttpConnectionManager,
                  invalid: Callable[[str], ResourceValidationError]) -> tuple[str, ...]:
    names: list[str] = []
    for i, http_filter in enumerate(hcm.http_filters):
        if not http_filter.name:
            raise invalid(f"http_filters[{i}]: no name")
        if http_filter.name in names:
            raise invalid(f"http_filters[{i}]: duplicate name {http_filter.name!r}")
        if not http_filter.HasField("typed_config") and not http_filter.is_optional:
            raise invalid(f"http_filters[{i}] ({http_filter.name}): no typed_config")
        names.append(http_filter.name)
    last = hcm.http_filters[-1] if hcm.http_filters else None
    if last is None or last.typed_config.type_url != _ROUTER_TYPE:
        raise invalid("http_filters: the last filter must be the router "
                      f"({router_pb2.Router.DESCRIPTOR.full_name})")
    return tuple(names)
