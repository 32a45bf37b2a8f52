"""Which version each node gets: versioned snapshots per node group, and watches.

:class:`Snapshot` is a checked, immutable value (per-resource versions);
:class:`SnapshotCache` keeps one per group and answers the ADS server's watches
(:class:`ConfigWatcher`) when what a stream subscribed changes.
"""

from xds_server.cache.answers import delta_answer, sotw_answer
from xds_server.cache.snapshot import Resource, Snapshot, TypeDiff, diff
from xds_server.cache.snapshot_cache import SnapshotCache, default_group_key
from xds_server.cache.watch import (
    ABSENT,
    FULL_STATE_TYPES,
    WILDCARD,
    Cancel,
    ConfigWatcher,
    DeltaResponse,
    Response,
    WatchRequest,
)

__all__ = [
    "ABSENT",
    "FULL_STATE_TYPES",
    "WILDCARD",
    "Cancel",
    "ConfigWatcher",
    "DeltaResponse",
    "Resource",
    "Response",
    "Snapshot",
    "SnapshotCache",
    "TypeDiff",
    "WatchRequest",
    "default_group_key",
    "delta_answer",
    "diff",
    "sotw_answer",
]
