"""State-of-the-world ADS as a sans-IO state machine, one per stream.

Rules (https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol):

* Per type: the subscribed names, the last sent version and nonce, the last ACKed
  version. A request whose ``response_nonce`` is not the latest nonce sent for its type
  is stale and ignored entirely — its subscription too (the client repeats it when it
  ACKs the latest response). Until a first response of a type is sent, any nonce is
  accepted (a new stream, or a client reconnecting with an old nonce).
* ACK: same nonce, no ``error_detail``. NACK: same nonce with ``error_detail``; logged,
  counted (``on_nack``) and not answered — the rejected resources count as sent, so
  the next push happens when the snapshot changes. gRPC changes its subscription by
  sending the same nonce again: that is not counted twice, only re-subscribed.
* Empty ``resource_names`` on the first LDS/CDS requests is a (legacy) wildcard, as is
  an explicit ``*``; gRPC always names its resources.
* What to send is the cache's decision (:func:`xds_server.cache.sotw_answer`): LDS/CDS
  carry every subscribed resource and are answered at once even if none exists; RDS/EDS
  carry the subscribed ones that exist. ``version_info`` is the version of exactly the
  resources sent.
* LDS/CDS responses also list each subscribed name that does not exist in
  ``resource_errors`` with ``NOT_FOUND`` (gRFC A88). gRPC (1.85) never reads an
  omission as "does not exist" for a resource it has not received yet — it waits for
  its 15 s timer — but reads that error at once when the client runs with
  ``GRPC_EXPERIMENTAL_XDS_DATA_ERROR_HANDLING=true``. Clients unaware of it ignore it.

Example::

    stream = SotwStream(1, cache)
    stream.receive(DiscoveryRequest(node=node, type_url=CLUSTER, resource_names=["a"]))
    [out.response for out in stream.drain()]      # the CDS response, if a snapshot exists
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import ClassVar

from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import code_pb2, status_pb2

from xds_server.cache.watch import (
    ABSENT,
    FULL_STATE_TYPES,
    WILDCARD,
    Cancel,
    Response,
    WatchRequest,
)
from xds_server.resources import short_name
from xds_server.server.callbacks import StreamProtocol
from xds_server.server.stream_base import StreamBase, TypeState

__all__ = ["SotwStream"]

log = logging.getLogger("xds_server.server")

_NOT_FOUND = code_pb2.NOT_FOUND


class SotwStream(StreamBase):
    """One state-of-the-world ADS stream (``StreamAggregatedResources``)."""

    protocol: ClassVar[StreamProtocol] = "sotw"

    def receive(self, request: discovery_pb2.DiscoveryRequest) -> None:
        """Process one request; responses it makes due land in the outbox.

        Raises :class:`~xds_server.server.stream_base.StreamRejected` if a gate
        callback refuses the stream.
        """
        if self._closed:
            return
        node = self._begin(request)
        self._gate(self._callbacks.on_stream_request, self.stream_id, node, request)
        state = self._state(request.type_url)
        if state is None:
            return
        nonce = request.response_nonce
        if state.sent_nonce and nonce != state.sent_nonce:
            log.debug("stream %d: stale %s request (nonce %r, latest %r) ignored",
                      self.stream_id, short_name(state.type_url), nonce, state.sent_nonce)
            return
        if nonce and nonce == state.sent_nonce:
            error = request.error_detail if request.HasField("error_detail") else None
            self._ack_or_nack(state, nonce, error, request.version_info)
        elif not state.answered and request.version_info:
            state.acked_version = request.version_info  # reconnect: what the client kept
        self._subscribe(state, request.resource_names)
        self._rewatch(state, request, "" if state.answered else request.version_info)
        self._changed()

    def _subscribe(self, state: TypeState, resource_names: Iterable[str]) -> None:
        requested = set(resource_names)
        names = frozenset(requested - {WILDCARD})
        if WILDCARD in requested:
            wildcard = True
        elif not requested:
            wildcard = state.legacy and state.type_url in FULL_STATE_TYPES
        else:
            wildcard = False
        if requested:
            state.legacy = False
        if names != state.names or wildcard != state.wildcard:
            log.debug("stream %d: %s subscription %s%s", self.stream_id,
                      short_name(state.type_url), sorted(names), " + *" if wildcard else "")
        state.names, state.wildcard = names, wildcard
        if not wildcard:  # unsubscribed names are forgotten by the client
            state.known = {n: v for n, v in state.known.items() if n in names}

    def _create_watch(self, request: WatchRequest,
                      respond: Callable[[Response], None]) -> Cancel:
        return self._watcher.create_watch(request, respond)

    def _build(self, state: TypeState, answer: Response,
               nonce: str) -> discovery_pb2.DiscoveryResponse:
        known = {r.name: r.version for r in answer.resources}
        known.update((n, ABSENT) for n in answer.absent)
        state.known = known
        state.sent_version = answer.version
        response = discovery_pb2.DiscoveryResponse(
            version_info=answer.version,
            type_url=state.type_url,
            nonce=nonce,
            resources=[r.to_any() for r in answer.resources],
        )
        if state.type_url in FULL_STATE_TYPES:
            # gRPC never reads an omission as "does not exist" for a resource it has not
            # received yet (it waits 15 s); an explicit NOT_FOUND (gRFC A88) it does read.
            for name in answer.absent:
                response.resource_errors.add(
                    resource_name=discovery_pb2.ResourceName(name=name),
                    error_detail=status_pb2.Status(
                        code=_NOT_FOUND,
                        message=f"{short_name(state.type_url)} resource {name} does not exist"),
                )
        return response
