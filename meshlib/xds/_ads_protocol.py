"""The client side of state-of-the-world ADS as a sans-IO state machine (like h11).

Data in, events out: :meth:`AdsClientProtocol.receive` takes a ``DiscoveryResponse``
and returns events; :meth:`AdsClientProtocol.outgoing` returns the
``DiscoveryRequest``s now due. No sockets, no clocks: the asyncio/grpc stream around
it is a thin shell, and tests drive it with plain messages.

Rules (https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol):

* The first request of a stream carries the ``Node``; later ones do not.
* Every response is answered once, with its nonce: an ACK carries the response's
  ``version_info``; a NACK carries the last *accepted* version and an
  ``error_detail`` naming each invalid resource.
* gRFC A46 (https://github.com/grpc/proposal/blob/master/A46-xds-nack-semantics.md):
  a response with invalid resources is NACKed as a whole, but its valid resources
  are still applied; each invalid resource keeps its previous value (if any) and is
  reported by a :class:`ResourceError`.
* LDS/CDS responses hold every subscribed resource: a previously received name that
  is missing is deleted (:class:`ResourceRemoved`); so is any subscribed name the
  server lists in ``resource_errors`` with NOT_FOUND (gRFC A88). RDS/EDS omissions mean
  nothing. If a resource in an LDS/CDS response could not be named, no deletion is
  inferred from that response.
* A subscription change is a new request for the type, carrying the current version
  and nonce (it is also an ACK of the last response, as gRPC sends it).
* :meth:`AdsClientProtocol.reset` starts a new stream: every non-empty subscription
  is requested again with the last accepted version and no nonce; cached resources
  are kept, so the application keeps serving on them.
* :meth:`AdsClientProtocol.seed` restores resources accepted by an earlier process (a
  cache file): a subscribed name without a value takes the seeded one, and the type's
  seeded ``version_info`` is what the next request says it has, until a response of
  the type arrives.

:class:`TypeCache` and :func:`apply_resources` are what this state machine shares with
the delta one (:mod:`meshlib.xds._delta_protocol`): the cached values, and decoding,
validating and turning one response's resources into events.

Example::

    ads = AdsClientProtocol(node)
    ads.subscribe(LISTENER, ["reviews:50051"])
    send(ads.outgoing())                  # [LDS request with node]
    for event in ads.receive(response):   # ResourceChanged(...) ...
        ...
    send(ads.outgoing())                  # [ACK] or [NACK]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, TypeVar

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.rpc import code_pb2, status_pb2

from meshlib.xds._decoders import DECODERS, Decoder, Update
from meshlib.xds._resources import FULL_STATE_TYPES, ResourceValidationError, short_name

__all__ = [
    "WILDCARD",
    "AdsClientProtocol",
    "Applied",
    "CachedResource",
    "Event",
    "ResourceChanged",
    "ResourceError",
    "ResourceRemoved",
    "TypeCache",
    "apply_resources",
    "decode_resource",
    "nack_detail",
    "not_found_names",
]

_RESOURCE_WRAPPER = "type.googleapis.com/" + discovery_pb2.Resource.DESCRIPTOR.full_name
WILDCARD = "*"


@dataclass(frozen=True, slots=True)
class ResourceChanged:
    """``name`` has a new value ``update``, accepted at ``version``."""

    type_url: str
    name: str
    update: Update
    version: str


@dataclass(frozen=True, slots=True)
class ResourceRemoved:
    """``name`` does not exist (any more) on the control plane."""

    type_url: str
    name: str


@dataclass(frozen=True, slots=True)
class ResourceError:
    """``name`` arrived invalid and was NACKed; ``has_previous`` says whether a
    previous value is still in use. ``name`` is ``""`` if it could not be read."""

    type_url: str
    name: str
    error: ResourceValidationError
    has_previous: bool


Event = ResourceChanged | ResourceRemoved | ResourceError


@dataclass(frozen=True, slots=True)
class CachedResource:
    """An accepted resource: its decoded ``update``, the ``version`` it was accepted at
    (delta: the resource's own version; SotW: the response's ``version_info``) and the
    ``resource`` itself, unwrapped (what a cache file stores)."""

    name: str
    update: Update
    version: str
    resource: any_pb2.Any


@dataclass(slots=True)
class TypeCache:
    """Per type URL: the subscribed names and the last good value of each (shared by the
    state-of-the-world and the delta state machines)."""

    names: set[str] = field(default_factory=set)
    resources: dict[str, Update] = field(default_factory=dict)
    entries: dict[str, CachedResource] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)  # reported removed, not back since
    received: bool = False  # a response of this type arrived (on any stream)
    version: str = ""  # SotW: last accepted version_info; delta: informational

    def wanted(self, name: str) -> bool:
        """Whether ``name`` is subscribed (by name or by wildcard)."""
        return name in self.names or WILDCARD in self.names

    def put(self, entry: CachedResource) -> bool:
        """Keep ``entry``; True if its value differs from the previous one."""
        changed = self.resources.get(entry.name) != entry.update
        self.resources[entry.name] = entry.update
        self.entries[entry.name] = entry
        self.absent.discard(entry.name)
        return changed

    def remove(self, name: str) -> None:
        """``name`` does not exist: forget its value, remember it was reported."""
        self.forget(name)
        self.absent.add(name)

    def forget(self, name: str) -> None:
        """Drop the value of ``name`` (deleted, or no longer subscribed)."""
        self.resources.pop(name, None)
        self.entries.pop(name, None)

    def seed(self, entries: Iterable[CachedResource]) -> None:
        """Take each entry whose name is subscribed and has no value yet."""
        for entry in entries:
            if self.wanted(entry.name) and entry.name not in self.resources:
                self.put(entry)


@dataclass(slots=True)
class Applied:
    """What :func:`apply_resources` made of one response's resources: the change and
    error events (in resource order), the validation errors (for the NACK), every name
    seen (valid or not), and whether some resource could not even be named."""

    events: list[Event] = field(default_factory=list)
    errors: list[ResourceValidationError] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    unnamed: bool = False


def apply_resources(cache: TypeCache, type_url: str, decoder: Decoder,
                    items: Iterable[tuple[any_pb2.Any, str, str]]) -> Applied:
    """Decode and validate each ``(resource, name, version)`` of one response and apply
    it to ``cache`` (gRFC A46): a valid resource of a wanted name replaces the previous
    value (:class:`ResourceChanged` if it differs); an invalid one keeps it and is
    reported (:class:`ResourceError`, if subscribed). ``name`` is the name the resource
    was delivered under (delta), or ``""``; a duplicate name is invalid."""
    out = Applied()
    for any_msg, given_name, version in items:
        try:
            name, update, resource = _decode(decoder, type_url, any_msg, given_name)
            if name in out.seen:
                raise ResourceValidationError("duplicate resource in one response",
                                              type_url=type_url, resource_name=name)
        except ResourceValidationError as err:
            out.errors.append(err)
            out.unnamed |= not err.resource_name
            out.seen.add(err.resource_name)
            if err.resource_name in cache.names:
                out.events.append(ResourceError(type_url, err.resource_name, err,
                                                err.resource_name in cache.resources))
            continue
        out.seen.add(name)
        if cache.wanted(name) and cache.put(CachedResource(name, update, version, resource)):
            out.events.append(ResourceChanged(type_url, name, update, version))
    return out


def decode_resource(decoder: Decoder, type_url: str, any_msg: any_pb2.Any,
                    given_name: str = "") -> tuple[str, Update]:
    """``(name, update)`` of one resource, unwrapping a ``Resource`` wrapper; raises
    :class:`ResourceValidationError`. ``given_name`` (the name a delta response or a
    cache file delivers it under) names errors and must match the resource's name."""
    name, update, _ = _decode(decoder, type_url, any_msg, given_name)
    return name, update


def _decode(decoder: Decoder, type_url: str, any_msg: any_pb2.Any,
            given_name: str) -> tuple[str, Update, any_pb2.Any]:
    wrapped_name = given_name
    if any_msg.type_url == _RESOURCE_WRAPPER:
        wrapper = discovery_pb2.Resource()
        if not any_msg.Unpack(wrapper):
            raise ResourceValidationError("cannot parse Resource wrapper", type_url=type_url,
                                          resource_name=given_name)
        wrapped_name, any_msg = wrapper.name or given_name, wrapper.resource
    try:
        update = decoder(any_msg)
    except ResourceValidationError as err:
        if wrapped_name and not err.resource_name:
            raise ResourceValidationError(err.detail, type_url=type_url,
                                          resource_name=wrapped_name) from err
        raise
    name = getattr(update, "name", None) or getattr(update, "cluster_name", "")
    if given_name and name != given_name:
        raise ResourceValidationError(f"delivered as {given_name!r} but named {name!r}",
                                      type_url=type_url, resource_name=given_name)
    return name, update, any_msg


def not_found_names(resource_errors: Iterable[discovery_pb2.ResourceError]) -> list[str]:
    """The names a response's ``resource_errors`` say do not exist (gRFC A88)."""
    return [e.resource_name.name for e in resource_errors
            if e.error_detail.code == code_pb2.NOT_FOUND]


@dataclass(slots=True)
class _TypeState(TypeCache):
    nonce: str = ""  # last received on this stream
    sent: bool = False  # a request went out on this stream
    error: str | None = None  # pending NACK detail


_S = TypeVar("_S", bound=TypeCache)


class ProtocolCore(Generic[_S]):
    """What the state-of-the-world and the delta state machines share: per-type state,
    subscriptions, the cached values and restoring them."""

    _state_type: type[_S]

    def __init__(self, node: base_pb2.Node, *,
                 decoders: Mapping[str, Decoder] = DECODERS) -> None:
        self.node = node
        self._decoders = decoders
        self._types: dict[str, _S] = {}
        self._pending: dict[str, None] = {}  # type URLs with a request due, in order
        self._node_sent = False

    def _grow(self, type_url: str, names: Iterable[str]) -> tuple[_S, set[str]]:
        """The state of ``type_url`` and which of ``names`` it does not hold yet."""
        if type_url not in self._decoders:
            raise ValueError(f"no decoder for {type_url}")
        state = self._types.setdefault(type_url, self._state_type())
        return state, set(names) - state.names

    def _shrink(self, type_url: str, names: Iterable[str]) -> tuple[_S, set[str]] | None:
        """Drop those of ``names`` that are subscribed, forgetting their values; the
        state and the dropped names, or None if nothing was subscribed."""
        state = self._types.get(type_url)
        if state is None:
            return None
        gone = state.names & set(names)
        if not gone:
            return None
        state.names -= gone
        for name in gone:
            state.forget(name)
            state.absent.discard(name)
        return state, gone

    def subscriptions(self, type_url: str) -> frozenset[str]:
        """The subscribed names of ``type_url``."""
        state = self._types.get(type_url)
        return frozenset(state.names) if state else frozenset()

    def resources(self, type_url: str) -> Mapping[str, Update]:
        """The current (last good) value of every cached resource of ``type_url``."""
        state = self._types.get(type_url)
        return MappingProxyType(state.resources if state else {})

    def version(self, type_url: str) -> str:
        """The last accepted version of ``type_url`` (``""`` before any)."""
        state = self._types.get(type_url)
        return state.version if state else ""

    def cached_resources(self, type_url: str) -> Mapping[str, CachedResource]:
        """Like :meth:`resources`, with each value's version and serialized resource."""
        state = self._types.get(type_url)
        return MappingProxyType(state.entries if state else {})

    def seed(self, type_url: str, entries: Iterable[CachedResource],
             version: str = "") -> None:
        """Restore resources accepted earlier (e.g. by a previous process): each entry
        whose name is subscribed and has no value yet takes it, without an event.
        ``version`` becomes the type's version if no response of the type has arrived
        yet, so the control plane need not resend what the client has (delta sends the
        entries' own versions in ``initial_resource_versions``)."""
        state = self._types.get(type_url)
        if state is None:
            return
        state.seed(entries)
        if version and not state.received:
            state.version = version


class AdsClientProtocol(ProtocolCore[_TypeState]):
    """State-of-the-world ADS client state, per type URL, across stream restarts."""

    _state_type = _TypeState

    # ------------------------------------------------------------ subscriptions

    def subscribe(self, type_url: str, names: Iterable[str]) -> None:
        """Add ``names`` to the subscription of ``type_url`` (a request if it grows)."""
        state, new = self._grow(type_url, names)
        if new:
            state.names |= new
            self._pending[type_url] = None

    def unsubscribe(self, type_url: str, names: Iterable[str]) -> None:
        """Drop ``names`` from the subscription and forget their cached values."""
        found = self._shrink(type_url, names)
        if found is None:
            return
        state, _ = found
        if state.names or state.sent:
            self._pending[type_url] = None  # an empty list after names = unsubscribe all
        else:
            self._pending.pop(type_url, None)

    # ------------------------------------------------------------ the stream

    def outgoing(self) -> list[discovery_pb2.DiscoveryRequest]:
        """The requests now due: subscriptions, ACKs and NACKs, once each."""
        out = []
        for type_url in self._pending:
            state = self._types[type_url]
            request = discovery_pb2.DiscoveryRequest(
                type_url=type_url, version_info=state.version, response_nonce=state.nonce,
                resource_names=sorted(state.names))
            if state.error is not None:
                request.error_detail.CopyFrom(status_pb2.Status(
                    code=code_pb2.INVALID_ARGUMENT, message=state.error))
                state.error = None
            if not self._node_sent:
                request.node.CopyFrom(self.node)
                self._node_sent = True
            state.sent = True
            out.append(request)
        self._pending.clear()
        return out

    def receive(self, response: discovery_pb2.DiscoveryResponse) -> list[Event]:
        """Apply one response; an ACK or NACK for it is then due in :meth:`outgoing`."""
        type_url = response.type_url
        state = self._types.setdefault(type_url, _TypeState())
        state.nonce, state.error = response.nonce, None  # only the latest is answered
        self._pending[type_url] = None
        decoder = self._decoders.get(type_url)
        if decoder is None:
            state.error = f"unsupported type {type_url}"
            return []
        state.received = True
        version = response.version_info
        applied = apply_resources(state, type_url, decoder,
                                  ((any_msg, "", version) for any_msg in response.resources))
        events = applied.events
        events.extend(self._removals(state, type_url, response, applied.seen, applied.unnamed))
        if applied.errors:
            state.error = nack_detail(type_url, version, applied.errors)
        else:
            state.version = version
        return events

    def reset(self) -> None:
        """A new stream: node again, every non-empty subscription with its last version."""
        self._node_sent = False
        self._pending.clear()
        for type_url, state in self._types.items():
            state.nonce, state.sent, state.error = "", False, None
            if state.names:
                self._pending[type_url] = None

    # ------------------------------------------------------------ helpers

    def _removals(self, state: _TypeState, type_url: str,
                  response: discovery_pb2.DiscoveryResponse, seen: set[str],
                  unnamed: bool) -> list[Event]:
        gone: list[str] = []
        if type_url in FULL_STATE_TYPES and not unnamed:
            gone.extend(n for n in state.resources if n not in seen)
        for name in not_found_names(response.resource_errors):
            if state.wanted(name) and name not in seen and name not in gone:
                gone.append(name)
        gone = [n for n in gone if n not in state.absent]
        for name in gone:
            state.remove(name)
        return [ResourceRemoved(type_url, name) for name in gone]


def nack_detail(type_url: str, version: str, errors: list[ResourceValidationError]) -> str:
    """The ``error_detail`` message of a NACK: the version and every invalid resource."""
    listed = "; ".join(str(e) for e in errors)
    return (f"{short_name(type_url)} version {version!r} rejected: "
            f"{len(errors)} invalid resource(s): {listed}")
