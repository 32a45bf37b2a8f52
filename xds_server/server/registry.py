"""Who is connected and what each stream has: a read-only view for the admin and tests.

The ADS server registers every open stream; :meth:`StreamRegistry.streams` returns
frozen :class:`StreamStatus` values (subscriptions, last sent / ACKed version per
type). Like the cache, the registry lives on the event loop: call it there (the admin
thread goes through ``asyncio.run_coroutine_threadsafe``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from envoy.config.core.v3 import base_pb2

from xds_server.server.callbacks import StreamProtocol

__all__ = ["StreamRegistry", "StreamStatus", "TypeStatus"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TypeStatus:
    """One stream's state for one type URL.

    ``resources`` maps names to the versions last sent (``""``: told it does not
    exist); ``last_nack`` is the error of the latest NACK, cleared by the next ACK.
    """

    type_url: str
    names: tuple[str, ...]
    wildcard: bool
    resources: Mapping[str, str]
    sent_version: str
    sent_nonce: str
    acked_version: str
    last_nack: str
    acks: int
    nacks: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamStatus:
    """One ADS stream: its node, group, protocol and per-type state."""

    stream_id: int
    protocol: StreamProtocol
    node_id: str
    node: base_pb2.Node | None = field(compare=False, repr=False)
    group: str
    opened_at: float
    types: Mapping[str, TypeStatus]

    def acked(self, type_url: str, version: str) -> bool:
        """Whether the latest ACK for ``type_url`` was of ``version``."""
        status = self.types.get(type_url)
        return status is not None and status.acked_version == version


class _Stream(Protocol):
    stream_id: int

    @property
    def node(self) -> base_pb2.Node | None: ...

    def status(self) -> StreamStatus: ...


class StreamRegistry:
    """The open ADS streams of one server.

    Example::

        registry = ads.registry
        await registry.wait_acked("frontend-1", CLUSTER, snapshot.version_of(CLUSTER, names))
        [s.group for s in registry.streams()]
    """

    def __init__(self) -> None:
        self._streams: dict[int, _Stream] = {}
        self._waiters: set[asyncio.Event] = set()

    def add(self, stream: _Stream) -> None:
        """Register an open stream."""
        self._streams[stream.stream_id] = stream
        self.changed()

    def remove(self, stream_id: int) -> None:
        """Forget a closed stream."""
        self._streams.pop(stream_id, None)
        self.changed()

    def changed(self) -> None:
        """Some stream's state changed: wake :meth:`wait_for` callers."""
        for waiter in self._waiters:
            waiter.set()

    def streams(self) -> tuple[StreamStatus, ...]:
        """Every open stream, by stream id."""
        return tuple(self._streams[i].status() for i in sorted(self._streams))

    def stream(self, stream_id: int) -> StreamStatus | None:
        """One stream, or None."""
        stream = self._streams.get(stream_id)
        return stream.status() if stream is not None else None

    def by_node(self, node_id: str) -> tuple[StreamStatus, ...]:
        """The open streams of node ``node_id``."""
        return tuple(
            self._streams[i].status()
            for i in sorted(self._streams)
            if (node := self._streams[i].node) is not None and node.id == node_id
        )

    def node(self, node_id: str) -> base_pb2.Node | None:
        """The Node message of a connected node ``node_id`` (latest stream), or None."""
        for i in sorted(self._streams, reverse=True):
            node = self._streams[i].node
            if node is not None and node.id == node_id:
                return node
        return None

    def has_acked(self, node_id: str, type_url: str, version: str) -> bool:
        """Whether some stream of ``node_id`` last ACKed ``version`` of ``type_url``."""
        return any(s.acked(type_url, version) for s in self.by_node(node_id))

    async def wait_for(self, predicate: Callable[[], bool], *, timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` holds (re-checked on every change); False on timeout."""
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while not predicate():
                        await waiter.wait()
                        waiter.clear()
                    return True
            return predicate()
        finally:
            self._waiters.discard(waiter)

    async def wait_acked(self, node_id: str, type_url: str, version: str, *,
                         timeout: float = 5.0) -> bool:
        """Wait until :meth:`has_acked`; False on timeout."""
        return await self.wait_for(lambda: self.has_acked(node_id, type_url, version),
                                   timeout=timeout)
