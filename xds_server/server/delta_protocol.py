"""Incremental (delta) ADS as a sans-IO state machine, one per stream.

Rules (https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol, "Incremental
xDS"):

* Subscriptions are deltas: ``resource_names_subscribe`` / ``_unsubscribe`` are
  applied from every request, even one with a stale nonce (dropping them would lose
  them for good). ``*`` subscribes to / unsubscribes from the wildcard; a first LDS/CDS
  request that subscribes nothing is a (legacy) wildcard.
* ``initial_resource_versions`` of the first request of a type (a reconnect) is what
  the client has: resources at those versions are not resent, and the ones that no
  longer exist are reported removed.
* ACK / NACK by the latest nonce, as in state of the world; a NACK is logged, counted
  and not answered by resending.
* A response carries only resources that changed, and ``removed_resources`` for
  names the client has or newly subscribed that do not exist
  (:func:`xds_server.cache.delta_answer`); ``system_version_info`` is the snapshot's
  version.

Example::

    stream = DeltaStream(1, cache)
    stream.receive(DeltaDiscoveryRequest(node=node, type_url=CLUSTER))   # wildcard
    [out.response for out in stream.drain()]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import ClassVar

from envoy.service.discovery.v3 import discovery_pb2

from xds_server.cache.watch import (
    ABSENT,
    FULL_STATE_TYPES,
    WILDCARD,
    Cancel,
    DeltaResponse,
    WatchRequest,
)
from xds_server.resources import short_name
from xds_server.server.callbacks import StreamProtocol
from xds_server.server.stream_base import StreamBase, TypeState

__all__ = ["DeltaStream"]

log = logging.getLogger("xds_server.server")


class DeltaStream(StreamBase):
    """One incremental ADS stream (``DeltaAggregatedResources``)."""

    protocol: ClassVar[StreamProtocol] = "delta"

    def receive(self, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        """Process one request; responses it makes due land in the outbox.

        Raises :class:`~xds_server.server.stream_base.StreamRejected` if a gate
        callback refuses the stream.
        """
        if self._closed:
            return
        node = self._begin(request)
        self._gate(self._callbacks.on_stream_delta_request, self.stream_id, node, request)
        first = request.type_url not in self._types
        state = self._state(request.type_url)
        if state is None:
            return
        if first:
            state.known = dict(request.initial_resource_versions)
            if not request.resource_names_subscribe and state.type_url in FULL_STATE_TYPES:
                state.wildcard = True
        elif request.initial_resource_versions:
            log.debug("stream %d: initial_resource_versions after the first %s request "
                      "ignored", self.stream_id, short_name(state.type_url))
        nonce = request.response_nonce
        if nonce and nonce == state.sent_nonce:
            error = request.error_detail if request.HasField("error_detail") else None
            self._ack_or_nack(state, nonce, error, state.sent_version)
        elif nonce:
            log.debug("stream %d: stale %s nonce %r (latest %r); subscription applied",
                      self.stream_id, short_name(state.type_url), nonce, state.sent_nonce)
        self._subscribe(state, request.resource_names_subscribe,
                        request.resource_names_unsubscribe)
        self._rewatch(state, request)
        self._changed()

    def _subscribe(self, state: TypeState, subscribe: Iterable[str],
                   unsubscribe: Iterable[str]) -> None:
        names, wildcard = set(state.names), state.wildcard
        for name in subscribe:
            if name == WILDCARD:
                wildcard = True
            else:
                names.add(name)
        for name in unsubscribe:
            if name == WILDCARD:
                wildcard = False
            else:
                names.discard(name)
        state.names, state.wildcard = frozenset(names), wildcard
        if not wildcard:  # the client drops what it unsubscribed from
            state.known = {n: v for n, v in state.known.items() if n in names}

    def _create_watch(self, request: WatchRequest,
                      respond: Callable[[DeltaResponse], None]) -> Cancel:
        return self._watcher.create_delta_watch(request, respond)

    def _build(self, state: TypeState, answer: DeltaResponse,
               nonce: str) -> discovery_pb2.DeltaDiscoveryResponse:
        known = dict(state.known)
        known.update((r.name, r.version) for r in answer.resources)
        for name in answer.removed:
            if name in state.names:
                known[name] = ABSENT  # told absent; resent when it appears
            else:
                known.pop(name, None)
        state.known = known
        state.sent_version = answer.system_version
        return discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=answer.system_version,
            type_url=state.type_url,
            nonce=nonce,
            resources=[
                discovery_pb2.Resource(name=r.name, version=r.version, resource=r.to_any())
                for r in answer.resources
            ],
            removed_resources=answer.removed,
        )
