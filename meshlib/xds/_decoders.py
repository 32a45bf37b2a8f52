"""The decoder of each supported type URL, and the union of decoded updates."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from google.protobuf import any_pb2

from meshlib.xds._cluster import ClusterUpdate, decode_cluster
from meshlib.xds._endpoints import EndpointsUpdate, decode_endpoints
from meshlib.xds._listener import ListenerUpdate, ServerListenerUpdate, decode_listener
from meshlib.xds._resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from meshlib.xds._route_config import RouteConfigUpdate, decode_route_config

__all__ = ["DECODERS", "Decoder", "Update"]

Update = ListenerUpdate | ServerListenerUpdate | RouteConfigUpdate | ClusterUpdate | EndpointsUpdate
Decoder = Callable[[any_pb2.Any], Update]

# Type URL → pure ``decode(any) -> Update`` (raises ResourceValidationError).
DECODERS: Mapping[str, Decoder] = MappingProxyType({
    LISTENER: decode_listener,
    ROUTE: decode_route_config,
    CLUSTER: decode_cluster,
    ENDPOINT: decode_endpoints,
})
