"""xDS v3 resource type URLs, and their short names (``LDS`` … ``SDS``).

Protocol constants: the control plane serves these types and meshlib's xDS client
subscribes to them (https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol).
"""

from __future__ import annotations

__all__ = [
    "CLUSTER",
    "ENDPOINT",
    "FULL_STATE_TYPES",
    "LISTENER",
    "ROUTE",
    "SECRET",
    "TYPE_URL_PREFIX",
    "short_name",
]

TYPE_URL_PREFIX = "type.googleapis.com/"
LISTENER = TYPE_URL_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = TYPE_URL_PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = TYPE_URL_PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = TYPE_URL_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = TYPE_URL_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

# State-of-the-world LDS/CDS responses carry every subscribed resource, so a name that
# is missing from one has been deleted; RDS/EDS responses may carry a subset.
FULL_STATE_TYPES = frozenset({LISTENER, CLUSTER})

_SHORT = {LISTENER: "LDS", ROUTE: "RDS", CLUSTER: "CDS", ENDPOINT: "EDS", SECRET: "SDS"}


def short_name(type_url: str) -> str:
    """``LDS``/``RDS``/``CDS``/``EDS``/``SDS`` for messages, logs and metric labels
    (the message name for any other type URL).

    Example::

        >>> short_name(CLUSTER)
        'CDS'
    """
    return _SHORT.get(type_url, type_url.rsplit(".", 1)[-1])
