"""xDS v3 type URLs and the ADS order. Nothing else belongs here.

The type URLs are protocol constants shared with meshlib's own xDS client, defined
once in :mod:`meshlib.contract.resources`; the push order is the server's own.
"""

from __future__ import annotations

from meshlib.contract import (  # one definition, shared with the client
    CLUSTER,
    ENDPOINT,
    FULL_STATE_TYPES,
    LISTENER,
    ROUTE,
    SECRET,
    short_name,
)

__all__ = [
    "ADS_ORDER",
    "CLUSTER",
    "ENDPOINT",
    "FULL_STATE_TYPES",
    "LISTENER",
    "ROUTE",
    "SECRET",
    "short_name",
]

# Make-before-break order for pushes: clusters and endpoints before the listeners
# and routes that point at them (envoy xDS protocol, "eventual consistency").
ADS_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
