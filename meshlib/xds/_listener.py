"""Listener (LDS): the HttpConnectionManager of an ``api_listener`` (gRFC A27).

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

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2

from meshlib.xds._resources import LISTENER, ResourceValidationError, unpack
from meshlib.xds._route_config import RouteConfigUpdate, decode_route_configuration

__all__ = ["ListenerUpdate", "decode_listener"]

_ROUTER_TYPE = "type.googleapis.com/" + router_pb2.Router.DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerUpdate:
    """A decoded client Listener: exactly one of ``route_config_name`` (RDS) and
    ``route_config`` (inline) is set; ``http_filters`` are the filter names, in order."""

    name: str
    route_config_name: str | None = None
    route_config: RouteConfigUpdate | None = None
    http_filters: tuple[str, ...] = ()


def decode_listener(any_msg: any_pb2.Any) -> ListenerUpdate:
    """Decode and validate one LDS resource; raises :class:`ResourceValidationError`."""
    listener = unpack(any_msg, listener_pb2.Listener, LISTENER)
    name = listener.name

    def invalid(detail: str) -> ResourceValidationError:
        return ResourceValidationError(detail, type_url=LISTENER, resource_name=name)

    if not name:
        raise invalid("Listener has no name")
    if not listener.HasField("api_listener"):
        raise invalid("not an api_listener (socket listeners are for servers and Envoy)")
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
                              http_filters=filters)
    if kind == "route_config":
        try:
            inline = decode_route_configuration(hcm.route_config)
        except ResourceValidationError as err:
            raise invalid(f"inline route_config: {err.detail}") from err
        return ListenerUpdate(name=name, route_config=inline, http_filters=filters)
    raise invalid(f"HttpConnectionManager: unsupported route specifier {kind or 'unset'}")


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
