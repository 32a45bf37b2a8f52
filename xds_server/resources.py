"""xDS v3 type URLs and the ADS order. Nothing else belongs here."""

from __future__ import annotations

__all__ = [
    "ADS_ORDER",
    "CLUSTER",
    "ENDPOINT",
    "LISTENER",
    "ROUTE",
    "SECRET",
    "short_name",
]

_PREFIX = "type.googleapis.com/"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

# Make-before-break order for pushes: clusters and endpoints before the listeners
# and routes that point at them (envoy xDS protocol, "eventual consistency").
ADS_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)

_SHORT = {LISTENER: "LDS", ROUTE: "RDS", CLUSTER: "CDS", ENDPOINT: "EDS", SECRET: "SDS"}


def short_name(type_url: str) -> str:
    """``LDS``/``RDS``/``CDS``/``EDS``/``SDS`` for logs and metric labels."""
    return _SHORT.get(type_url, type_url.rsplit(".", 1)[-1])
