"""Listeners: ``api_listener``s and xDS-server listeners for gRPC, a socket for Envoy.

* Proxyless gRPC clients ask for a Listener named after their target; each is an
  ``api_listener`` whose HttpConnectionManager points at the port's RouteConfiguration
  over RDS (gRFC A27).
* gRPC xDS-enabled servers ask for ``grpc/server?xds.resource.listening_address=
  ip:port`` (gRFC A36); they get a socket Listener at that very address (gRPC checks it
  matches) whose inline route answers every call locally (``non_forwarding_action``).
* Envoy ignores ``api_listener``s; it gets one socket Listener, ``outbound``.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2

from xds_server.model import MeshModel, Service
from xds_server.node import NodeGroup
from xds_server.translate._protos import ads_config_source, fault_filter, pack, router_filter
from xds_server.translate.names import (
    ENVOY_OUTBOUND_LISTENER,
    ENVOY_OUTBOUND_ROUTE,
    default_service_port,
    listener_names,
    route_config_name,
    server_listener_name,
)

__all__ = [
    "HCM_FILTER",
    "envoy_outbound_listener",
    "grpc_api_listeners",
    "grpc_server_listeners",
]

HCM_FILTER = "envoy.filters.network.http_connection_manager"
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
            hcm = pack(_rds_hcm(route_config_name(service, port.port, cluster_domain=domain)))
            for name in listener_names(service, port.port, group.namespace, default_port,
                                       cluster_domain=domain):
                out[name] = listener_pb2.Listener(
                    name=name, api_listener=api_listener_pb2.ApiListener(api_listener=hcm))
    return out


def grpc_server_listeners(model: MeshModel, services: Iterable[Service] | None = None
                          ) -> dict[str, listener_pb2.Listener]:
    """Listeners for gRPC xDS servers on every endpoint address and any-address.

    Every ``ip:port`` of every Service's (or of ``services'``) EndpointSlices, plus
    ``0.0.0.0:port`` and ``[::]:port`` for each distinct endpoint port, since a server
    may bind either.
    """
    addresses: set[tuple[str, int]] = set()
    for service in model.services if services is None else services:
        for endpoint_slice in model.endpoint_slices_for(service):
            if endpoint_slice.address_type == "FQDN":
                continue
            for port in endpoint_slice.ports:
                addresses.update((any_address, port.port) for any_address in _ANY_ADDRESSES)
                for endpoint in endpoint_slice.endpoints:
                    addresses.update((address, port.port) for address in endpoint.addresses)
    hcm = pack(_server_hcm())
    out: dict[str, listener_pb2.Listener] = {}
    for address, port in sorted(addresses, key=lambda a: (a[1], a[0])):
        name = server_listener_name(address, port)
        out[name] = _socket_listener(name, address, port, hcm, base_pb2.INBOUND)
    return out


def envoy_outbound_listener(model: MeshModel, group: NodeGroup) -> listener_pb2.Listener:
    """Envoy's ``outbound`` Listener on ``0.0.0.0:<outbound port>``, routes over RDS.

    The port is the node's (metadata ``OUTBOUND_PORT``) or the MeshConfig default.
    """
    port = group.outbound_port or model.mesh_config.sidecar_outbound_port
    hcm = _rds_hcm(ENVOY_OUTBOUND_ROUTE)
    hcm.codec_type = _HCM.AUTO
    hcm.stat_prefix = "outbound"
    return _socket_listener(ENVOY_OUTBOUND_LISTENER, "0.0.0.0", port, pack(hcm),
                            base_pb2.OUTBOUND)


def _rds_hcm(route_name: str) -> hcm_pb2.HttpConnectionManager:
    return _HCM(
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=route_name),
        http_filters=[fault_filter(), router_filter()],
    )


def _server_hcm() -> hcm_pb2.HttpConnectionManager:
    """Server side: one inline virtual host for every authority, served locally.

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
        http_filters=[router_filter()],
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
