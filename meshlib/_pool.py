"""Per-endpoint gRPC channels, shared by every cluster and target of a Mesh.

One channel per endpoint address, created on first use (gRPC connects lazily too),
reference-counted by the clusters listing the address, and closed ``grace`` seconds
after the last cluster drops it, so calls in flight finish. Sync channels live in
one :class:`ChannelPool`; ``grpc.aio`` channels belong to an event loop, so each loop
gets its own :class:`AioChannelPool`.

mTLS: a destination that takes mTLS gets a secure channel whose expected server name
is the destination identity's DNS form (``SpiffeId.dns_name``), checked by gRPC in
the handshake against the mesh roots. When the workload certificate rotates,
:meth:`ChannelPool.set_credentials` retires every secure channel (closed after the
grace, so calls in flight finish) and the next call opens a new one: one handshake
per endpoint per rotation, none per call.
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

from meshlib.errors import CertificateError, MeshError

__all__ = ["DEFAULT_CLOSE_GRACE", "AioChannelPool", "CallableTracker", "ChannelPool",
           "no_certificate"]

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


class CallableTracker:
    """The multicallables of a Mesh, whose per-endpoint caches hold channels.

    ``forget_channels()`` empties them all, so the next call of each asks its pool
    again. A multicallable reads its ``_cache`` *before* asking the pool, so one that
    races a rotation stores into the dropped dict: never a stale entry.
    """

    def __init__(self) -> None:
        self._callables: weakref.WeakSet[Any] = weakref.WeakSet()

    def track(self, callable_: Any) -> None:
        self._callables.add(callable_)

    def forget_channels(self) -> None:
        for callable_ in list(self._callables):
            callable_._cache = {}


def _options_for(options: list[tuple[str, Any]], server_name: str | None
                 ) -> list[tuple[str, Any]]:
    if server_name is None:
        return options
    return [*options, ("grpc.ssl_target_name_override", server_name)]


def no_certificate(address: str, server_name: str) -> CertificateError:
    """The error of a call to an mTLS destination before the first certificate."""
    return CertificateError(
        f"this Mesh has no workload certificate yet (the CA has not answered; it keeps "
        f"trying): {address} takes mTLS as {server_name}, and a Mesh with an identity "
        "never calls it in plaintext")


class ChannelPool:
    """Sync channels by address; ``acquire``/``release`` from the xDS thread."""

    def __init__(self, *, options: Sequence[tuple[str, Any]] = (),
                 credentials: grpc.ChannelCredentials | None = None,
                 grace: float = DEFAULT_CLOSE_GRACE,
                 schedule: Callable[[float, Callable[[], None]], object] | None = None,
                 tracker: CallableTracker | None = None) -> None:
        self._options = [*DEFAULT_CHANNEL_OPTIONS, *options]
        self._credentials = credentials
        self.needs_certificate = False  # an identity is configured: never downgrade
        self._grace = grace
        self._schedule = schedule
        self.tracker = tracker or CallableTracker()
        self._channels: dict[tuple[str, str | None], grpc.Channel] = {}
        self._refs: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.handshake_channels = 0  # secure channels opened: one per endpoint+rotation

    def get(self, address: str, server_name: str | None = None) -> grpc.Channel:
        """The channel to ``address``, created on first use; with mTLS checking the
        peer is ``server_name`` when given and this pool has credentials. Without
        credentials a destination that takes mTLS is called in plaintext, unless the
        Mesh has an identity whose first certificate has not come yet: then
        :class:`~meshlib.CertificateError`, never a silent downgrade."""
        if self._credentials is None:
            if server_name is not None and self.needs_certificate:
                raise no_certificate(address, server_name)
            server_name = None
        key = (address, server_name)
        channel = self._channels.get(key)
        if channel is not None:
            return channel
        if self._closed:
            raise MeshError("this Mesh is closed: make a new one to call services")
        with self._lock:
            channel = self._channels.get(key)
            if channel is None:
                if server_name is not None:
                    channel = grpc.secure_channel(address, self._credentials,  # type: ignore[arg-type]
                                                  _options_for(self._options, server_name))
                    self.handshake_channels += 1
                else:
                    channel = grpc.insecure_channel(address, self._options)
                self._channels[key] = channel
            return channel

    def set_credentials(self, credentials: grpc.ChannelCredentials | None) -> None:
        """New client credentials (a rotated certificate): secure channels made from
        now on use them; the old ones close after the grace period."""
        with self._lock:
            self._credentials = credentials
            retired = [k for k in self._channels if k[1] is not None]
            old = [self._channels.pop(k) for k in retired]
        self.tracker.forget_channels()
        if not old:
            return

        def close_old() -> None:
            for channel in old:
                channel.close()
        if self._schedule is not None and self._grace > 0:
            self._schedule(self._grace, close_old)
        else:
            close_old()

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
            channels = [self._channels.pop(k) for k in list(self._channels)
                        if k[0] == address]
        for channel in channels:
            log.debug("closing channel to removed endpoint %s", address)
            channel.close()

    def in_use(self, address: str) -> bool:
        """Whether some cluster still lists ``address``."""
        return bool(self._refs.get(address))

    def addresses(self) -> frozenset[str]:
        """Addresses with an open channel."""
        return frozenset(k[0] for k in self._channels)

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
                 grace: float = DEFAULT_CLOSE_GRACE,
                 tracker: CallableTracker | None = None) -> None:
        self._loop = weakref.ref(loop)  # the Mesh keys pools weakly by loop
        self.tracker = tracker or CallableTracker()
        self._options = [*DEFAULT_CHANNEL_OPTIONS, *options]
        self._credentials = credentials
        self.needs_certificate = False  # as ChannelPool's
        self._grace = grace
        self._channels: dict[tuple[str, str | None], grpc.aio.Channel] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def is_current(self) -> bool:
        """Whether this pool belongs to the running event loop."""
        try:
            return asyncio.get_running_loop() is self._loop()
        except RuntimeError:
            return False

    def get(self, address: str, server_name: str | None = None) -> grpc.aio.Channel:
        """As :meth:`ChannelPool.get`."""
        if self._credentials is None:
            if server_name is not None and self.needs_certificate:
                raise no_certificate(address, server_name)
            server_name = None
        key = (address, server_name)
        channel = self._channels.get(key)
        if channel is None:
            if server_name is not None:
                channel = grpc.aio.secure_channel(address, self._credentials,  # type: ignore[arg-type]
                                                  _options_for(self._options, server_name))
            else:
                channel = grpc.aio.insecure_channel(address, self._options)
            self._channels[key] = channel
        return channel

    def set_credentials(self, credentials: grpc.ChannelCredentials | None) -> None:
        """Thread-safe: like :meth:`ChannelPool.set_credentials`, on this pool's loop."""
        loop = self._loop()
        if loop is None or loop.is_closed():
            return

        def swap() -> None:
            self._credentials = credentials
            old = [self._channels.pop(k) for k in list(self._channels) if k[1] is not None]
            self.tracker.forget_channels()
            if old:
                loop.call_later(self._grace, self._close_all, old)

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(swap)

    def _close_all(self, channels: list[grpc.aio.Channel]) -> None:
        loop = self._loop()
        if loop is None:
            return
        for channel in channels:
            task = loop.create_task(channel.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def drop(self, address: str, still_used: Callable[[str], bool]) -> None:
        """Thread-safe: close the channel to ``address`` after the grace period unless
        ``still_used(address)`` says it came back."""
        loop = self._loop()
        if loop is None or loop.is_closed():
            return

        def later() -> None:
            if still_used(address):
                return
            self._close_all([self._channels.pop(k) for k in list(self._channels)
                             if k[0] == address])

        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to do
            loop.call_soon_threadsafe(loop.call_later, self._grace, later)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await task
