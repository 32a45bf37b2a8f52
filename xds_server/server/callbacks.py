"""Hooks into the ADS server: a small Protocol and a dataclass of optional callables
(go-control-plane's ``Callbacks`` / ``CallbackFuncs``).

All hooks run on the event loop, inline with the stream, so keep them quick. An
exception from a *gate* (``on_stream_open``, ``on_delta_stream_open``,
``on_node_connected``, ``on_stream_request``, ``on_stream_delta_request``) closes the
stream with ``UNAVAILABLE`` (the client reconnects with backoff); an exception from
any other hook is logged and ignored.

Order on a stream: ``on_stream_open`` → for the first request ``on_node_connected``,
then for every request ``on_stream_request`` (before its watch is created, so a hook
that sets the group's first snapshot gets it answered at once) → ``on_ack`` /
``on_nack`` → ``on_stream_response`` after each response is written →
``on_node_disconnected`` and ``on_stream_closed``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

__all__ = ["CallbackFuncs", "Callbacks", "StreamProtocol"]

StreamProtocol = Literal["sotw", "delta"]
Node = base_pb2.Node


class Callbacks(Protocol):
    """Observer (and gate) of ADS streams. ``node`` is the Node of the stream's first
    request (gRPC sends it only there); ``type_url`` of ``*_open`` is ``""`` (ADS)."""

    def on_stream_open(self, stream_id: int, type_url: str) -> None:
        """A state-of-the-world stream opened (no request read yet)."""

    def on_stream_closed(self, stream_id: int, node: Node | None) -> None:
        """A state-of-the-world stream ended; its watches are cancelled."""

    def on_stream_request(
        self, stream_id: int, node: Node, request: discovery_pb2.DiscoveryRequest
    ) -> None:
        """A request arrived (stale ones included), before any watch for it."""

    def on_stream_response(
        self,
        stream_id: int,
        node: Node,
        request: discovery_pb2.DiscoveryRequest,
        response: discovery_pb2.DiscoveryResponse,
        snapshot_created_at: float,
    ) -> None:
        """A response was written; ``request`` opened the watch it answers."""

    def on_delta_stream_open(self, stream_id: int, type_url: str) -> None:
        """An incremental stream opened."""

    def on_delta_stream_closed(self, stream_id: int, node: Node | None) -> None:
        """An incremental stream ended."""

    def on_stream_delta_request(
        self, stream_id: int, node: Node, request: discovery_pb2.DeltaDiscoveryRequest
    ) -> None:
        """An incremental request arrived, before any watch for it."""

    def on_stream_delta_response(
        self,
        stream_id: int,
        node: Node,
        request: discovery_pb2.DeltaDiscoveryRequest,
        response: discovery_pb2.DeltaDiscoveryResponse,
        snapshot_created_at: float,
    ) -> None:
        """An incremental response was written."""

    def on_ack(self, stream_id: int, node: Node, type_url: str, version: str) -> None:
        """The client accepted the response of ``version`` (either protocol)."""

    def on_nack(
        self, stream_id: int, node: Node, type_url: str, error_detail: status_pb2.Status
    ) -> None:
        """The client rejected the latest response of ``type_url`` (either protocol)."""

    def on_node_connected(self, stream_id: int, node: Node, protocol: StreamProtocol) -> None:
        """The stream's first request told us its node (either protocol)."""

    def on_node_disconnected(
        self, stream_id: int, node: Node, protocol: StreamProtocol
    ) -> None:
        """A stream whose node was known ended."""


def _call(fn: Callable[..., Any] | None, *args: Any) -> None:
    if fn is not None:
        fn(*args)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackFuncs:
    """:class:`Callbacks` from optional callables; unset ones do nothing.

    Example::

        callbacks = CallbackFuncs(
            stream_request=lambda sid, node, req: build_snapshot_for(node),
            nack=lambda sid, node, type_url, err: nacks.labels(type_url).inc(),
        )
    """

    stream_open: Callable[[int, str], None] | None = None
    stream_closed: Callable[[int, Node | None], None] | None = None
    stream_request: Callable[[int, Node, discovery_pb2.DiscoveryRequest], None] | None = None
    stream_response: Callable[..., None] | None = None
    delta_stream_open: Callable[[int, str], None] | None = None
    delta_stream_closed: Callable[[int, Node | None], None] | None = None
    stream_delta_request: (
        Callable[[int, Node, discovery_pb2.DeltaDiscoveryRequest], None] | None
    ) = None
    stream_delta_response: Callable[..., None] | None = None
    ack: Callable[[int, Node, str, str], None] | None = None
    nack: Callable[[int, Node, str, status_pb2.Status], None] | None = None
    node_connected: Callable[[int, Node, StreamProtocol], None] | None = None
    node_disconnected: Callable[[int, Node, StreamProtocol], None] | None = None

    def on_stream_open(self, stream_id: int, type_url: str) -> None:
        """See :meth:`Callbacks.on_stream_open`."""
        _call(self.stream_open, stream_id, type_url)

    def on_stream_closed(self, stream_id: int, node: Node | None) -> None:
        """See :meth:`Callbacks.on_stream_closed`."""
        _call(self.stream_closed, stream_id, node)

    def on_stream_request(
        self, stream_id: int, node: Node, request: discovery_pb2.DiscoveryRequest
    ) -> None:
        """See :meth:`Callbacks.on_stream_request`."""
        _call(self.stream_request, stream_id, node, request)

    def on_stream_response(
        self,
        stream_id: int,
        node: Node,
        request: discovery_pb2.DiscoveryRequest,
        response: discovery_pb2.DiscoveryResponse,
        snapshot_created_at: float,
    ) -> None:
        """See :meth:`Callbacks.on_stream_response`."""
        _call(self.stream_response, stream_id, node, request, response, snapshot_created_at)

    def on_delta_stream_open(self, stream_id: int, type_url: str) -> None:
        """See :meth:`Callbacks.on_delta_stream_open`."""
        _call(self.delta_stream_open, stream_id, type_url)

    def on_delta_stream_closed(self, stream_id: int, node: Node | None) -> None:
        """See :meth:`Callbacks.on_delta_stream_closed`."""
        _call(self.delta_stream_closed, stream_id, node)

    def on_stream_delta_request(
        self, stream_id: int, node: Node, request: discovery_pb2.DeltaDiscoveryRequest
    ) -> None:
        """See :meth:`Callbacks.on_stream_delta_request`."""
        _call(self.stream_delta_request, stream_id, node, request)

    def on_stream_delta_response(
        self,
        stream_id: int,
        node: Node,
        request: discovery_pb2.DeltaDiscoveryRequest,
        response: discovery_pb2.DeltaDiscoveryResponse,
        snapshot_created_at: float,
    ) -> None:
        """See :meth:`Callbacks.on_stream_delta_response`."""
        _call(self.stream_delta_response, stream_id, node, request, response,
              snapshot_created_at)

    def on_ack(self, stream_id: int, node: Node, type_url: str, version: str) -> None:
        """See :meth:`Callbacks.on_ack`."""
        _call(self.ack, stream_id, node, type_url, version)

    def on_nack(
        self, stream_id: int, node: Node, type_url: str, error_detail: status_pb2.Status
    ) -> None:
        """See :meth:`Callbacks.on_nack`."""
        _call(self.nack, stream_id, node, type_url, error_detail)

    def on_node_connected(self, stream_id: int, node: Node, protocol: StreamProtocol) -> None:
        """See :meth:`Callbacks.on_node_connected`."""
        _call(self.node_connected, stream_id, node, protocol)

    def on_node_disconnected(
        self, stream_id: int, node: Node, protocol: StreamProtocol
    ) -> None:
        """See :meth:`Callbacks.on_node_disconnected`."""
        _call(self.node_disconnected, stream_id, node, protocol)
