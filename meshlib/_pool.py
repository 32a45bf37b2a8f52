"""Per-endpoint gRPC channels, shared by every cluster and target of a Mesh.

One channel per endpoint address, created on first use (gRPC connects lazily too),
reference-counted by the clusters listing the address, and closed ``grace`` seconds
after the last cluster drops it, so calls in flight finish. Sync channels live in
one :class:`ChannelPool`; ``grpc.aio`` channels belong to an event loop, so each loop
gets its own :class:`AioChannelPool`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from meshlib.errors import MeshError

__all__ = ["DEFAULT_CLOSE_GRACE", "AioChannelPool", "ChannelPool"]

log = logging.getLogger("meshlib")

DEFAULT_CLOSE_GRACE = 30.0  # seconds a removed endpoint's channel stays for calls in flight

# Keep connections warm and notice dead peers; let gRPC reconnect fast on loopback/LAN.
DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    ("grpc.enable_retries", 0),  # meshlib retries; gRPC's own would multiply them
)


class ChannelPool:
    """Sync channels by address; ``acquire``/``release`` from the xDS thread."""

    def __init__(self, *, options: Sequence[tuple[str, Any]] = (),
                 credentials: grpc.ChannelCredentials | None = None,
                 grace: float = DEFAULT_CLOSE_GRACE,
                 schedule: Callable[[float, Callable[[], None]], object] | None = None) -> None:
        self._options = [*DEFAULT_CHANNEL_OPTIONS, *options]
        self._credentials = credentials
        self._grace = grace
        self._schedule = schedule
        self._channels: dict[str, grpc.Channel] = {}
        self._refs: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False

    def get(self, address: str) -> grpc.Channel:
        """The channel to ``address``, created on first use."""
        channel = self._channels.get(address)
        if channel is not None:
            return channel
        if self._closed:
            raise MeshError("this Mesh is closed: make a new one to call services")
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                if self._credentials is not None:
                    channel = grpc.secure_channel(address, self._credentials, self._options)
                else:
                    channel = grpc.insecure_channel(address, self._options)
                self._channels[address] = channel
            return channel

    def acquire(self, address: str) -> None:
        with self._lock:
            self._refs[address] = self._refs.get(address, 0) + 1

    def release(self, address: str) -> None:
        with self._lock:
            refs = self._refs.get(address, 0) - 1
            if refs > 0:
                self._refs[address] = refs
                return
            self._refs.pop(address, None)
        if self._schedule is not None and self._grace > 0:
            self._schedule(self._grace, lambda: self._close_unused(address))
        else:
            self._close_unused(address)

    def _close_unused(self, address: str) -> None:
        with self._lock:
            if self._refs.get(address):
                return  # came back during the grace period
            channel = self._channels.pop(address, None)
        if channel is not None:
            log.debug("closing channel to removed endpoint %s", address)
            channel.close()

    def in_use(self, address: str) -> bool:
        """Whether some cluster still lists ``address``."""
        return bool(self._refs.get(address))

    def addresses(self) -> frozenset[str]:
        """Addresses with an open channel."""
        return frozenset(self._channels)

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
            self._closed = True
        for channel in channels:
            channel.close()


class AioChannelPool:
    """``grpc.aio`` channels by address, for one event loop (use it only from there)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *,
                 options: Sequence[tuple[str, Any]] = (),
                 credentials: grpc.ChannelCredentials | None = None,
                 grace: float = DEFAULT_CLOSE_GRACE) -> None:
        self._loop = weakref.ref(loop)  # the Mesh keys pools weakly by loop
        self._options = [*DEFAULT_CHANNEL_OPTIONS, *options]
        self._credentials = credentials
        self._grace = grace
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def is_current(self) -> bool:
        """Whether this pool belongs to the running event loop."""
        try:
            return asyncio.get_running_loop() is self._loop()
        except RuntimeError:
            return False

    def get(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(address, self._credentials, self._options)
            else:
                channel = grpc.aio.insecure_channel(address, self._options)
            self._channels[address] = channel
        return channel

    def drop(self, address: str, still_used: Callable[[str], bool]) -> None:
        """Thread-safe: close the channel to ``address`` after the grace period unless
        ``still_used(address)`` says it came back."""
        loop = self._loop()
        if loop is None or loop.is_closed():
            return

        def later() -> None:
            if still_used(address):
                return
            channel = self._channels.pop(address, None)
            if channel is not None:
                task = loop.create_task(channel.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to do
            loop.call_soon_threadsafe(loop.call_later, self._grace, later)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await task
