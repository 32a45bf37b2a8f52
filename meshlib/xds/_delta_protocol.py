"""The client side of incremental (delta) ADS as a sans-IO state machine, with the same
outward shape as :class:`~meshlib.xds.AdsClientProtocol`: data in, events out.

:meth:`DeltaAdsClientProtocol.receive` takes a ``DeltaDiscoveryResponse`` and returns
events (:class:`ResourceChanged`, :class:`ResourceRemoved`, :class:`ResourceError`);
:meth:`DeltaAdsClientProtocol.outgoing` returns the ``DeltaDiscoveryRequest``\\ s now due.
Decoding, validation and the events are shared with the state-of-the-world machine
(:func:`~meshlib.xds._ads_protocol.apply_resources`).

Rules (https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol#incremental-xds):

* Subscriptions travel as changes: ``resource_names_subscribe`` /
  ``resource_names_unsubscribe``. The first request of a type on a stream subscribes
  every name and lists in ``initial_resource_versions`` the version of each resource
  the client already has (a reconnect, or a seeded cache), so the server sends only
  what differs; the first request of the stream carries the ``Node``.
* Every response is answered once: an ACK is a request with its ``response_nonce``; a
  NACK adds ``error_detail`` naming each invalid resource. A request that only changes
  subscriptions has no nonce (unlike state of the world). Subscription changes due when
  an ACK goes out ride on it.
* A response carries only changed resources, each with its own ``version``; a
  ``Resource`` without a body is a TTL heartbeat and is ignored. gRFC A46: valid
  resources are applied even if others are invalid; each invalid one keeps its previous
  value and version (so a reconnect asks for it again) and is reported by a
  :class:`ResourceError`.
* ``removed_resources`` (and ``resource_errors`` with NOT_FOUND, gRFC A88) delete
  cached values (:class:`ResourceRemoved`). For a name the client never had, the spec
  lets the client ignore the removal: LDS/CDS report it at once, as state of the
  world does (NOT_FOUND); RDS/EDS leave it to the does-not-exist timer, as state of
  the world must, so a watcher sees the same thing over both protocols.
* A name unsubscribed and subscribed again before a request went out is sent as an
  unsubscribe, then a subscribe, so the server forgets what it sent and sends it again.

Example::

    ads = DeltaAdsClientProtocol(node)
    ads.subscribe(LISTENER, ["reviews"])
    send(ads.outgoing())                  # [DeltaDiscoveryRequest with node]
    for event in ads.receive(response):   # ResourceChanged(...) ...
        ...
    send(ads.outgoing())                  # [ACK] or [NACK]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import code_pb2, status_pb2

from meshlib.xds._ads_protocol import (
    WILDCARD,
    Event,
    ProtocolCore,
    ResourceRemoved,
    TypeCache,
    apply_resources,
    nack_detail,
    not_found_names,
)
from meshlib.xds._resources import FULL_STATE_TYPES

__all__ = ["DeltaAdsClientProtocol"]


@dataclass(slots=True)
class _DeltaTypeState(TypeCache):
    nonce: str = ""  # of the response an ACK/NACK is due for
    ack_due: bool = False
    error: str | None = None  # pending NACK detail
    sent: bool = False  # a request of this type went out on this stream
    subscribe: set[str] = field(default_factory=set)  # changes not sent yet
    unsubscribe: set[str] = field(default_factory=set)


class DeltaAdsClientProtocol(ProtocolCore[_DeltaTypeState]):
    """Incremental ADS client state, per type URL, across stream restarts."""

    _state_type = _DeltaTypeState

    # ------------------------------------------------------------ subscriptions

    def subscribe(self, type_url: str, names: Iterable[str]) -> None:
        """Add ``names`` to the subscription of ``type_url`` (a request if it grows)."""
        state, new = self._grow(type_url, names)
        if not new:
            return
        state.names |= new
        if state.sent:
            state.subscribe |= new  # kept even if also pending unsubscribe: see outgoing()
        self._pending[type_url] = None

    def unsubscribe(self, type_url: str, names: Iterable[str]) -> None:
        """Drop ``names`` from the subscription and forget their cached values."""
        found = self._shrink(type_url, names)
        if found is None:
            return
        state, gone = found
        if state.sent:
            fresh = gone & (state.subscribe - state.unsubscribe)  # never told the server
            state.subscribe -= gone
            state.unsubscribe |= gone - fresh
            self._pending[type_url] = None
        elif not state.names and not state.ack_due:
            self._pending.pop(type_url, None)

    # ------------------------------------------------------------ the stream

    def outgoing(self) -> list[discovery_pb2.DeltaDiscoveryRequest]:
        """The requests now due: subscription changes, ACKs and NACKs, once each."""
        out = []
        for type_url in self._pending:
            out.extend(self._requests(type_url, self._types[type_url]))
        self._pending.clear()
        if out and not self._node_sent:
            out[0].node.CopyFrom(self.node)
            self._node_sent = True
        return out

    def receive(self, response: discovery_pb2.DeltaDiscoveryResponse) -> list[Event]:
        """Apply one response; an ACK or NACK for it is then due in :meth:`outgoing`."""
        type_url = response.type_url
        state = self._types.setdefault(type_url, _DeltaTypeState())
        state.nonce, state.ack_due, state.error = response.nonce, True, None
        self._pending[type_url] = None
        decoder = self._decoders.get(type_url)
        if decoder is None:
            state.error = f"unsupported type {type_url}"
            return []
        state.received = True
        applied = apply_resources(state, type_url, decoder, (
            (r.resource, r.name, r.version) for r in response.resources
            if r.HasField("resource")))
        events = applied.events
        removed = [*response.removed_resources, *not_found_names(response.resource_errors)]
        for name in dict.fromkeys(removed):
            if (name in applied.seen or name in state.absent or not state.wanted(name)
                    or (name not in state.resources and type_url not in FULL_STATE_TYPES)):
                continue
            state.remove(name)
            events.append(ResourceRemoved(type_url, name))
        if applied.errors:
            state.error = nack_detail(type_url, response.system_version_info, applied.errors)
        else:
            state.version = response.system_version_info
        return events

    def reset(self) -> None:
        """A new stream: node again; every non-empty subscription is requested again,
        with the versions of the cached resources."""
        self._node_sent = False
        self._pending.clear()
        for type_url, state in self._types.items():
            state.nonce, state.ack_due, state.error, state.sent = "", False, None, False
            state.subscribe.clear()
            state.unsubscribe.clear()
            if state.names:
                self._pending[type_url] = None

    # ------------------------------------------------------------ helpers

    def _requests(self, type_url: str,
                  state: _DeltaTypeState) -> list[discovery_pb2.DeltaDiscoveryRequest]:
        out = []
        first = not state.sent
        if first:
            if not state.names and not state.ack_due:
                return []
            request = discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, resource_names_subscribe=sorted(state.names),
                initial_resource_versions={
                    name: entry.version for name, entry in state.entries.items()
                    if entry.version and state.wanted(name)})
            if not state.names and type_url in FULL_STATE_TYPES:
                # An empty first LDS/CDS request would be a (legacy) wildcard subscription.
                request.resource_names_unsubscribe.append(WILDCARD)
        else:
            again = state.subscribe & state.unsubscribe
            if again:  # the server must forget these first, or it will not resend them
                out.append(discovery_pb2.DeltaDiscoveryRequest(
                    type_url=type_url, resource_names_unsubscribe=sorted(again)))
            request = discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, resource_names_subscribe=sorted(state.subscribe),
                resource_names_unsubscribe=sorted(state.unsubscribe - again))
        state.sent = True
        state.subscribe.clear()
        state.unsubscribe.clear()
        if state.ack_due:
            request.response_nonce = state.nonce
            if state.error is not None:
                request.error_detail.CopyFrom(status_pb2.Status(
                    code=code_pb2.INVALID_ARGUMENT, message=state.error))
            state.ack_due, state.error = False, None
        if (first or request.resource_names_subscribe or request.resource_names_unsubscribe
                or request.response_nonce):
            out.append(request)
        return out
