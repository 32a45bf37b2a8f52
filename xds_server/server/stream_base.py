"""What state-of-the-world and delta ADS streams share: per-type state, nonces, ACK /
NACK accounting, one-shot watches and the outbox (sans-IO: no sockets, no asyncio).

A stream feeds requests in with ``receive``; watches answered by the cache (now or on
a later ``set_snapshot``) append responses to the outbox and call ``on_ready``; the I/O
shell ``drain``\\ s the outbox, in ADS order, and writes. At most one watch per type is
open: it is opened by each accepted request and consumed by its response, so a type
gets its next push only after the client ACKed or NACKed the previous one.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from envoy.config.core.v3 import base_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from meshlib.contract import XdsError
from xds_server.cache.watch import Cancel, ConfigWatcher, WatchRequest
from xds_server.resources import ADS_ORDER, short_name
from xds_server.server.callbacks import CallbackFuncs, Callbacks, StreamProtocol
from xds_server.server.registry import StreamStatus, TypeStatus

__all__ = ["Outgoing", "StreamBase", "StreamRejected", "TypeState"]

log = logging.getLogger("xds_server.server")

_ORDER = {type_url: i for i, type_url in enumerate(ADS_ORDER)}


class StreamRejected(XdsError):
    """A gate callback refused the stream; the shell closes it with UNAVAILABLE."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A response to write, with the request whose watch it answers."""

    type_url: str
    response: Message
    request: Message
    snapshot_created_at: float


class TypeState:
    """Mutable per-type state of one stream. ``known`` is replaced, never mutated, so
    an open watch can hold it without a copy."""

    __slots__ = (
        "acked_version", "acks", "answered", "cancel", "handled_nonce", "known",
        "last_nack", "legacy", "nacks", "names", "request", "sent_nonce", "sent_version",
        "token", "type_url", "wildcard",
    )

    def __init__(self, type_url: str) -> None:
        self.type_url = type_url
        self.names: frozenset[str] = frozenset()
        self.wildcard = False
        self.legacy = True  # no name sent yet: an empty LDS/CDS subscription is wildcard
        self.known: dict[str, str] = {}
        self.answered = False
        self.sent_version = ""
        self.sent_nonce = ""
        self.handled_nonce = ""
        self.acked_version = ""
        self.last_nack = ""
        self.acks = 0
        self.nacks = 0
        self.cancel: Cancel | None = None
        self.token: object | None = None
        self.request: Message | None = None

    def status(self) -> TypeStatus:
        """A frozen copy for the registry."""
        return TypeStatus(
            type_url=self.type_url, names=tuple(sorted(self.names)), wildcard=self.wildcard,
            resources=MappingProxyType(self.known), sent_version=self.sent_version,
            sent_nonce=self.sent_nonce, acked_version=self.acked_version,
            last_nack=self.last_nack, acks=self.acks, nacks=self.nacks,
        )


class StreamBase:
    """Protocol state of one ADS stream; subclasses add ``receive`` for their request
    type and build their response type."""

    protocol: ClassVar[StreamProtocol]

    def __init__(
        self,
        stream_id: int,
        watcher: ConfigWatcher,
        *,
        callbacks: Callbacks | None = None,
        on_ready: Callable[[], None] | None = None,
        on_change: Callable[[], None] | None = None,
        vouch: Callable[[base_pb2.Node], base_pb2.Node] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self._vouch = vouch
        self._watcher = watcher
        self._callbacks: Callbacks = callbacks if callbacks is not None else CallbackFuncs()
        self._on_ready = on_ready
        self._on_change = on_change
        self._node: base_pb2.Node | None = None
        self._announced = False
        self._types: dict[str, TypeState] = {}
        self._outbox: list[Outgoing] = []
        self._nonces = itertools.count(1)
        self._closed = False
        self.opened_at = time.time()

    @property
    def node(self) -> base_pb2.Node | None:
        """The Node of the first request, once received."""
        return self._node

    def pending(self) -> bool:
        """Whether responses wait in the outbox."""
        return bool(self._outbox)

    def drain(self) -> list[Outgoing]:
        """Take the queued responses, clusters and endpoints before listeners and routes
        (several responses of one type keep their order)."""
        out, self._outbox = self._outbox, []
        out.sort(key=lambda o: _ORDER.get(o.type_url, len(_ORDER)))
        return out

    def close(self) -> None:
        """Cancel every watch; later requests and answers are ignored."""
        self._closed = True
        for state in self._types.values():
            self._cancel(state)

    def announced_node(self) -> base_pb2.Node | None:
        """The node if ``on_node_connected`` ran for it (so disconnect must be told)."""
        return self._node if self._announced else None

    def status(self) -> StreamStatus:
        """A frozen view for the registry."""
        node = self._node
        return StreamStatus(
            stream_id=self.stream_id, protocol=self.protocol,
            node_id=node.id if node is not None else "", node=node,
            group=self._watcher.group_key(node) if node is not None else "",
            opened_at=self.opened_at,
            types=MappingProxyType({t: s.status() for t, s in sorted(self._types.items())}),
        )

    # -- for subclasses -------------------------------------------------------------

    def _begin(self, request: Any) -> base_pb2.Node:
        if self._node is None:
            if request.HasField("node"):
                self._node = request.node
            else:
                log.warning("stream %d: first request has no node", self.stream_id)
                self._node = base_pb2.Node()
            if self._vouch is not None:  # what the stream proved replaces what it claims
                self._node = self._vouch(self._node)
            self._gate(self._callbacks.on_node_connected, self.stream_id, self._node,
                       self.protocol)
            self._announced = True
        return self._node

    def _gate(self, hook: Callable[..., None], *args: Any) -> None:
        try:
            hook(*args)
        except Exception as exc:
            log.warning("stream %d: %s refused the stream: %r", self.stream_id,
                        getattr(hook, "__name__", hook), exc)
            raise StreamRejected(str(exc) or type(exc).__name__) from exc

    def _notify(self, hook: Callable[..., None], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            log.exception("stream %d: callback %s failed", self.stream_id,
                          getattr(hook, "__name__", hook))

    def _state(self, type_url: str) -> TypeState | None:
        state = self._types.get(type_url)
        if state is None:
            if not type_url:
                log.warning("stream %d (node %r): request without type_url ignored",
                            self.stream_id, self._node_id())
                return None
            if type_url not in _ORDER:
                # Not ours: the request is kept as a watch that only a snapshot holding
                # that type would ever answer. No response, no error.
                log.warning("stream %d (node %r): type %s is not served; requests for it "
                            "get no response", self.stream_id, self._node_id(), type_url)
            state = self._types[type_url] = TypeState(type_url)
        return state

    def _ack_or_nack(self, state: TypeState, nonce: str,
                     error: status_pb2.Status | None, version: str) -> None:
        if nonce == state.handled_nonce:
            return  # a follow-up on an already ACKed response (subscription change)
        state.handled_nonce = nonce
        node = self._node or base_pb2.Node()
        if error is not None:
            state.nacks += 1
            state.last_nack = error.message
            log.warning("NACK from node %r (stream %d) for %s version %s: %s", node.id,
                        self.stream_id, short_name(state.type_url), state.sent_version,
                        error.message)
            self._notify(self._callbacks.on_nack, self.stream_id, node, state.type_url, error)
        else:
            state.acks += 1
            state.acked_version = version
            state.last_nack = ""
            log.debug("ACK from node %r (stream %d) for %s version %s", node.id,
                      self.stream_id, short_name(state.type_url), version)
            self._notify(self._callbacks.on_ack, self.stream_id, node, state.type_url, version)

    def _rewatch(self, state: TypeState, request: Message, version_info: str = "") -> None:
        self._cancel(state)
        token = state.token = object()
        state.request = request
        watch = WatchRequest(
            stream_id=self.stream_id, node=self._node or base_pb2.Node(),
            type_url=state.type_url, names=state.names, wildcard=state.wildcard,
            known=MappingProxyType(state.known), answered=state.answered,
            version_info=version_info,
        )
        cancel = self._create_watch(watch, functools.partial(self._answered, state, token))
        if state.token is token:  # not answered synchronously
            state.cancel = cancel

    def _cancel(self, state: TypeState) -> None:
        if state.cancel is not None:
            state.cancel()
        state.cancel = None
        state.token = None

    def _answered(self, state: TypeState, token: object, answer: Any) -> None:
        if state.token is not token or self._closed:
            return
        state.token = None
        state.cancel = None
        nonce = str(next(self._nonces))
        response = self._build(state, answer, nonce)
        state.answered = True
        state.sent_nonce = nonce
        assert state.request is not None
        self._outbox.append(
            Outgoing(state.type_url, response, state.request, answer.snapshot.created_at))
        self._changed()
        if self._on_ready is not None:
            self._on_ready()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _node_id(self) -> str:
        return self._node.id if self._node is not None else ""

    def _create_watch(self, request: WatchRequest, respond: Callable[[Any], None]) -> Cancel:
        raise NotImplementedError

    def _build(self, state: TypeState, answer: Any, nonce: str) -> Message:
        raise NotImplementedError
