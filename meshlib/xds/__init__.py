"""meshlib's xDS client: resource decoders, pure routing, and the sans-IO ADS protocol.

Layers, like grpc-go's xdsclient:

* per resource type a frozen dataclass and a pure ``decode(any) -> Update`` that raises
  :class:`ResourceValidationError` (``decode_listener``, ``decode_route_config``,
  ``decode_cluster``, ``decode_endpoints``; :data:`DECODERS` by type URL);
* :func:`pick_virtual_host` and :func:`match_route`, pure per-call routing;
* :class:`AdsClientProtocol` (state of the world) and :class:`DeltaAdsClientProtocol`
  (incremental), the sans-IO ADS state machines: data in, events
  (:class:`ResourceChanged`, :class:`ResourceRemoved`, :class:`ResourceError`) out,
  requests (ACK/NACK/subscriptions) from ``outgoing()``; :class:`CachedResource` is an
  accepted resource with its version, as ``seed()`` restores it;
* :class:`XdsClient`, the asyncio shell: one long-lived ADS stream (delta, falling back
  to state of the world: :data:`XdsProtocol`) with :class:`Backoff` reconnects,
  reference-counted watches (:class:`ResourceWatcher`, :class:`WatcherFuncs`), the
  does-not-exist timer, and the last good config kept in ``XdsClientConfig.cache_path``.

Example::

    ads = AdsClientProtocol(node)
    ads.subscribe(LISTENER, ["reviews:50051"])
    requests = ads.outgoing()
"""

from meshlib.xds._ads_protocol import (
    AdsClientProtocol,
    CachedResource,
    Event,
    ResourceChanged,
    ResourceError,
    ResourceRemoved,
)
from meshlib.xds._backoff import Backoff
from meshlib.xds._client import (
    DEFAULT_CACHE_WRITE_INTERVAL,
    DEFAULT_PROTOCOL,
    DEFAULT_RESOURCE_TIMEOUT,
    ChannelTls,
    XdsClient,
    XdsClientConfig,
    XdsProtocol,
)
from meshlib.xds._cluster import (
    CircuitBreakerConfig,
    ClusterUpdate,
    LbPolicy,
    OutlierDetectionConfig,
    RetryBudgetConfig,
    decode_cluster,
)
from meshlib.xds._decoders import DECODERS, Decoder, Update
from meshlib.xds._delta_protocol import DeltaAdsClientProtocol
from meshlib.xds._endpoints import Endpoint, EndpointsUpdate, Locality, decode_endpoints
from meshlib.xds._listener import (
    ListenerUpdate,
    ServerListenerUpdate,
    decode_listener,
)
from meshlib.xds._matchers import HeaderMatcher, QueryParameterMatcher, StringMatcher
from meshlib.xds._resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    ResourceValidationError,
)
from meshlib.xds._route_config import (
    ClusterWeight,
    Route,
    RouteAction,
    RouteConfigUpdate,
    RouteMatch,
    VirtualHost,
    decode_route_config,
)
from meshlib.xds._route_policies import FaultConfig, HashPolicy, RetryPolicy
from meshlib.xds._routing import match_route, pick_virtual_host
from meshlib.xds._watchers import ResourceWatcher, WatcherFuncs

__all__ = [
    "CLUSTER",
    "DECODERS",
    "DEFAULT_CACHE_WRITE_INTERVAL",
    "DEFAULT_PROTOCOL",
    "DEFAULT_RESOURCE_TIMEOUT",
    "ENDPOINT",
    "LISTENER",
    "ROUTE",
    "AdsClientProtocol",
    "Backoff",
    "CachedResource",
    "ChannelTls",
    "CircuitBreakerConfig",
    "ClusterUpdate",
    "ClusterWeight",
    "Decoder",
    "DeltaAdsClientProtocol",
    "Endpoint",
    "EndpointsUpdate",
    "Event",
    "FaultConfig",
    "HashPolicy",
    "HeaderMatcher",
    "LbPolicy",
    "ListenerUpdate",
    "Locality",
    "OutlierDetectionConfig",
    "QueryParameterMatcher",
    "ResourceChanged",
    "ResourceError",
    "ResourceRemoved",
    "ResourceValidationError",
    "ResourceWatcher",
    "RetryBudgetConfig",
    "RetryPolicy",
    "Route",
    "RouteAction",
    "RouteConfigUpdate",
    "RouteMatch",
    "ServerListenerUpdate",
    "StringMatcher",
    "Update",
    "VirtualHost",
    "WatcherFuncs",
    "XdsClient",
    "XdsClientConfig",
    "XdsProtocol",
    "decode_cluster",
    "decode_endpoints",
    "decode_listener",
    "decode_route_config",
    "match_route",
    "pick_virtual_host",
]
