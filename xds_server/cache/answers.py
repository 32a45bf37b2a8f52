"""Does this stream need a push, and with what? — pure functions of a watch and a
snapshot, decided by per-resource versions.

State of the world (xDS protocol, "Resource Types"): a response carries every
subscribed resource that exists. For Listener and Cluster (and any wildcard
subscription) a missing resource means "does not exist", so a push is also due when a
resource the client has disappeared, when a newly subscribed name does not exist, and
always for the first request. For other types only new or changed resources trigger a
push (absence cannot be expressed).

Delta: only changed resources, plus ``removed_resources`` for names the client has (or
newly subscribed) that do not exist.
"""

from __future__ import annotations

from xds_server.cache.snapshot import Resource, Snapshot
from xds_server.cache.watch import ABSENT, FULL_STATE_TYPES, DeltaResponse, Response, WatchRequest

__all__ = ["delta_answer", "sotw_answer"]


def _subscribed(request: WatchRequest, snapshot: Snapshot) -> dict[str, Resource]:
    by_name = snapshot.of_type(request.type_url)
    if request.wildcard:
        return dict(by_name)
    return {n: r for n in request.names if (r := by_name.get(n)) is not None}


def sotw_answer(request: WatchRequest, snapshot: Snapshot) -> Response | None:
    """The state-of-the-world response ``request`` needs now, or None."""
    present = _subscribed(request, snapshot)
    absent = tuple(sorted(n for n in request.names if n not in present))
    version = snapshot.version_of(request.type_url, present)
    known, answered = request.known, request.answered
    if not answered and request.version_info and request.version_info == version:
        # Reconnect: the client already has exactly this set.
        known, answered = {n: r.version for n, r in present.items()}, True
    changed = any(known.get(n) != r.version for n, r in present.items())
    if request.type_url in FULL_STATE_TYPES or request.wildcard:
        need = (
            not answered
            or changed
            or any(v != ABSENT and n not in present for n, v in known.items())
            or any(known.get(n) != ABSENT for n in absent)
        )
    else:
        need = changed
    if not need:
        return None
    return Response(
        request=request,
        version=version,
        resources=tuple(present[n] for n in sorted(present)),
        absent=absent,
        snapshot=snapshot,
    )


def delta_answer(request: WatchRequest, snapshot: Snapshot) -> DeltaResponse | None:
    """The incremental response ``request`` needs now, or None."""
    by_name = snapshot.of_type(request.type_url)
    known = request.known
    send: dict[str, Resource] = {
        n: r for n, r in _subscribed(request, snapshot).items() if known.get(n) != r.version
    }
    removed = {n for n in request.names if n not in by_name and known.get(n) != ABSENT}
    if request.wildcard:
        removed |= {n for n, v in known.items() if v != ABSENT and n not in by_name}
    # A first wildcard request is always answered, even with nothing (Envoy waits for it).
    if not send and not removed and (request.answered or not request.wildcard):
        return None
    return DeltaResponse(
        request=request,
        system_version=snapshot.version,
        resources=tuple(send[n] for n in sorted(send)),
        removed=tuple(sorted(removed)),
        snapshot=snapshot,
    )
