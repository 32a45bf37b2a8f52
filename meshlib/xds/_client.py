"""The asyncio shell around the sans-IO ADS state machines (:class:`AdsClientProtocol`,
:class:`DeltaAdsClientProtocol`): one long-lived ADS stream, and grpc-go style
watchers (https://github.com/grpc/grpc-go/tree/master/xds/internal/xdsclient).

* One ``grpc.aio`` channel to the control plane; one ADS stream at a time. When it
  fails, the client waits (:class:`Backoff`, reset once a stream got a response) and
  opens a new one; ``reset()`` re-requests every subscription with the versions it
  has, so nothing is pushed again unless it changed.
* Delta or state of the world (``XdsClientConfig.protocol``): ``"auto"`` opens
  ``DeltaAggregatedResources`` first and, if the server answers UNIMPLEMENTED, uses
  ``StreamAggregatedResources`` for the rest of the client's life (subscriptions and
  cached values carry over). Watchers see the same callbacks over both.
* With ``cache_path``, every accepted change is written to a file (debounced, atomic,
  :mod:`meshlib.xds._persist`) and :meth:`XdsClient.start` restores it: a watched name
  found in the file gets ``on_changed`` at once, even with the control plane down, and
  its version goes on the first request so the control plane sends only what changed.
  Restored values not watched before the first response are dropped; the does-not-exist
  timer never runs for a name that has a value.
* While disconnected the last good resources stay cached and watchers keep them.
  Stream trouble is reported once per outage, and only when a stream ends without a
  single response (gRFC A57: a stream that worked and then broke is just re-opened):
  ``on_ambient_error`` to watchers of a cached name, ``on_error`` to the others
  (gRFC A88, https://github.com/grpc/proposal/blob/master/A88-xds-data-error-handling.md).
* Subscriptions are reference-counted: the first watch of a name subscribes, the last
  cancel unsubscribes. A late watcher of a cached name gets ``on_changed`` at once.
* A name subscribed on a live stream but not received within ``resource_timeout`` is
  reported ``on_removed`` (the xDS does-not-exist timer, gRFC A57/A88); the timer only
  runs while a stream is up.

Everything runs on one event loop; :meth:`XdsClient.watch` and the cancel it returns
must be called from it.

Example::

    config = XdsClientConfig(server_address="127.0.0.1:15010", node_id="reviews-7f9c")
    async with XdsClient(config) as client:
        cancel = client.watch(LISTENER, "reviews", WatcherFuncs(changed=print))
        ...
        cancel()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal, get_args

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from meshlib.contract import (
    DEFAULT_NAMESPACE,
    KIND_METADATA_KEY,
    MESHLIB_NODE,
    NAMESPACE_METADATA_KEY,
    XdsError,
)
from meshlib.xds._ads_protocol import (
    AdsClientProtocol,
    Event,
    ResourceChanged,
    ResourceError,
    ResourceRemoved,
)
from meshlib.xds._backoff import Backoff
from meshlib.xds._decoders import Update
from meshlib.xds._delta_protocol import DeltaAdsClientProtocol
from meshlib.xds._persist import LastGoodConfig
from meshlib.xds._resources import short_name
from meshlib.xds._watchers import ResourceWatcher

__all__ = [
    "DEFAULT_CACHE_WRITE_INTERVAL",
    "DEFAULT_NAMESPACE",
    "DEFAULT_PROTOCOL",
    "DEFAULT_RESOURCE_TIMEOUT",
    "ChannelTls",
    "XdsClient",
    "XdsClientConfig",
    "XdsProtocol",
]

log = logging.getLogger(__name__)

DEFAULT_RESOURCE_TIMEOUT = 15.0  # seconds; gRPC's does-not-exist timer
DEFAULT_CACHE_WRITE_INTERVAL = 0.5  # seconds between two writes of the cache file

#: Which ADS flavour to speak: ``"auto"`` is delta, falling back to state of the world.
XdsProtocol = Literal["auto", "delta", "sotw"]
DEFAULT_PROTOCOL: XdsProtocol = "auto"

#: The TLS of the ADS channel: the pinned roots, and the workload's private key and
#: certificate chain (PEM) for mTLS, or None, None for server authentication only.
ChannelTls = tuple[bytes, bytes | None, bytes | None]

_Key = tuple[str, str]  # (type URL, resource name)
_Ads = AdsClientProtocol | DeltaAdsClientProtocol
_Request = discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest


@dataclass(frozen=True, slots=True, kw_only=True)
class XdsClientConfig:
    """Where the control plane is, who this node is, and how to talk to it.

    ``channel_options`` go to the ``grpc.aio`` channel (e.g. gRPC's own
    ``grpc.initial_reconnect_backoff_ms``). With ``root_certificates`` (PEM, pinned out
    of band) the channel is TLS and the control plane must prove it is one the roots
    vouch for; without, plaintext. ``tls``, if set, is asked before every connection
    instead (:data:`ChannelTls`: roots, and the workload's key and chain for mTLS), so
    a rotated certificate or root file is used from the next stream on; while it returns
    None (no certificate yet) the client waits for :meth:`XdsClient.tls_changed`.
    ``protocol`` picks delta or
    state-of-the-world ADS (``"auto"``: delta, or SotW if the server does not implement
    delta). ``cache_path``, if set, is where the last good config is kept (written at
    most every ``cache_write_interval`` seconds and on close) and restored from on
    start.
    """

    server_address: str
    node_id: str
    namespace: str = DEFAULT_NAMESPACE
    resource_timeout: float = DEFAULT_RESOURCE_TIMEOUT
    channel_options: Sequence[tuple[str, Any]] = ()
    protocol: XdsProtocol = DEFAULT_PROTOCOL
    cache_path: str | None = None
    cache_write_interval: float = DEFAULT_CACHE_WRITE_INTERVAL
    root_certificates: bytes | None = None
    tls: Callable[[], ChannelTls | None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.protocol not in get_args(XdsProtocol):
            raise ValueError(f"protocol must be one of {get_args(XdsProtocol)}, "
                             f"got {self.protocol!r}")
        if self.cache_write_interval < 0:
            raise ValueError("cache_write_interval must be >= 0")

    def node(self) -> base_pb2.Node:
        """The ``Node`` sent on each stream: metadata ``MESHLIB_KIND`` and ``NAMESPACE``."""
        metadata = struct_pb2.Struct()
        metadata.update({KIND_METADATA_KEY: MESHLIB_NODE,
                         NAMESPACE_METADATA_KEY: self.namespace})
        return base_pb2.Node(id=self.node_id, user_agent_name="meshlib", metadata=metadata)


class XdsClient:
    """Watches xDS resources over one ADS stream (delta or state of the world) that it
    keeps open.

    Example::

        async with XdsClient(XdsClientConfig(server_address=addr, node_id="n1")) as client:
            cancel = client.watch(LISTENER, "reviews", my_watcher)
    """

    def __init__(self, config: XdsClientConfig, *, backoff: Backoff | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.config = config
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        protocol = AdsClientProtocol if config.protocol == "sotw" else DeltaAdsClientProtocol
        self._ads: _Ads = protocol(config.node())
        self._watchers: dict[_Key, list[ResourceWatcher]] = {}
        self._absent: set[_Key] = set()  # reported removed, not received since
        self._timers: dict[_Key, asyncio.TimerHandle] = {}
        self._outbox: asyncio.Queue[_Request | None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._channel_tls: ChannelTls | None = None  # what self._channel was made with
        self._tls_ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._outage_reported = False
        self._closed = False
        self._cache: LastGoodConfig | None = None
        if config.cache_path is not None:
            self._cache = LastGoodConfig(
                config.cache_path, lambda: self._ads, namespace=config.namespace,
                node_id=config.node_id, server_address=config.server_address,
                interval=config.cache_write_interval)
        #: Set while the current stream has had a response; cleared when it ends. xDS
        #: sends only what changed, so a client whose (restored) versions are all current
        #: gets no response, and this stays clear, until something changes.
        self.connected = asyncio.Event()

    @property
    def protocol(self) -> Literal["delta", "sotw"]:
        """The ADS flavour in use now (``"auto"`` starts with delta)."""
        return "delta" if isinstance(self._ads, DeltaAdsClientProtocol) else "sotw"

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Restore the cache file (if configured), open the channel and start the stream
        loop (on the running event loop)."""
        if self._task is not None or self._closed:
            raise RuntimeError("XdsClient already started (a client runs once)")
        if self._cache is not None:
            self._cache.restore()
            for (type_url, name), watchers in list(self._watchers.items()):  # watched before
                if self._cache.claim((type_url, name)):
                    update = self._ads.resources(type_url)[name]
                    for watcher in list(watchers):
                        _notify(watcher.on_changed, update)
        if self.config.tls is None:
            roots = self.config.root_certificates
            self._channel_tls = None if roots is None else (roots, None, None)
            self._channel = self._open_channel(self._channel_tls)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="xds-ads")

    def _open_channel(self, tls: ChannelTls | None) -> grpc.aio.Channel:
        options = list(self.config.channel_options)
        if tls is None:
            return grpc.aio.insecure_channel(self.config.server_address, options)
        return grpc.aio.secure_channel(self.config.server_address,
                                       grpc.ssl_channel_credentials(*tls), options)

    async def _fresh_channel(self) -> None:
        """With ``config.tls``: a channel made of the current TLS material (waiting for
        the first certificate), replacing one made of older material."""
        provider = self.config.tls
        if provider is None:
            return
        while (tls := provider()) is None:
            self._tls_ready.clear()
            await self._tls_ready.wait()
        if self._channel is not None and tls == self._channel_tls:
            return
        old, self._channel, self._channel_tls = self._channel, self._open_channel(tls), tls
        if old is not None:
            await old.close()

    def tls_changed(self) -> None:
        """The certificate (or roots) behind ``config.tls`` changed: a client waiting
        for its first certificate connects now; a connected stream stays as it is (its
        handshake is done) and the next one uses the new material. Call on the loop."""
        self._tls_ready.set()

    async def close(self) -> None:
        """Stop the stream and the channel, write the cache file a last time if it
        changed; watchers get no more callbacks."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._cancel_timers()
        if self._cache is not None:
            self._cache.close()
        self._watchers.clear()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def __aenter__(self) -> XdsClient:
        self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # ------------------------------------------------------------ watches

    def watch(self, type_url: str, name: str, watcher: ResourceWatcher) -> Callable[[], None]:
        """Watch ``name`` of ``type_url``; returns an idempotent cancel function.

        The first watcher of a name subscribes it; a watcher of a name already known
        (received, or restored from the cache file) gets its value (or ``on_removed``)
        before this returns.
        """
        key = (type_url, name)
        watchers = self._watchers.get(key)
        if watchers is None:
            self._ads.subscribe(type_url, [name])  # raises ValueError for unknown types
            watchers = self._watchers[key] = []
            if self._cache is not None:
                self._cache.claim(key)
            self._flush()
        watchers.append(watcher)
        cached = self._ads.resources(type_url).get(name)
        if cached is not None:
            _notify(watcher.on_changed, cached)
        elif key in self._absent:
            _notify(watcher.on_removed)

        def cancel() -> None:
            current = self._watchers.get(key)
            if current is None or watcher not in current:
                return
            current.remove(watcher)
            if not current:
                del self._watchers[key]
                self._absent.discard(key)
                self._cancel_timer(key)
                if self._cache is not None:
                    self._cache.release(key)
                self._ads.unsubscribe(type_url, [name])
                self._flush()

        return cancel

    def subscriptions(self, type_url: str) -> frozenset[str]:
        """The names of ``type_url`` currently subscribed (watched at least once)."""
        return self._ads.subscriptions(type_url)

    def cached(self, type_url: str, name: str) -> Update | None:
        """The last good value of ``name``, kept across disconnections."""
        return self._ads.resources(type_url).get(name)

    # ------------------------------------------------------------ the stream

    async def _run(self) -> None:
        attempt = 0
        while True:
            outcome = await self._stream_once()
            self.connected.clear()
            if self._closed:  # grpc.aio may turn close()'s cancellation into CANCELLED
                return
            if outcome is None:  # switched to state of the world: try it at once
                continue
            error, got_response = outcome
            if got_response:
                attempt = 0
            else:
                self._report_outage(error)
            delay = self._backoff(attempt)
            attempt += 1
            log.info("ADS stream to %s: %s; retrying in %.2fs",
                     self.config.server_address, error, delay)
            await self._sleep(delay)

    async def _stream_once(self) -> tuple[XdsError, bool] | None:
        """One stream, until it ends: its error and whether it got a response, or None
        if the server does not implement delta and the client just switched to SotW."""
        try:
            await self._fresh_channel()
        except Exception as err:  # e.g. an unreadable root file: log, back off, retry
            log.warning("ADS channel to %s: %s", self.config.server_address, err)
            return XdsError(f"ADS channel: {err}"), False
        assert self._channel is not None
        ads = self._ads
        delta = isinstance(ads, DeltaAdsClientProtocol)
        ads.reset()
        outbox: asyncio.Queue[_Request | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[_Request]:
            while (request := await outbox.get()) is not None:
                yield request

        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        open_stream = stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources
        call = open_stream(requests())
        self._outbox = outbox
        got_response = False
        try:
            self._flush()
            async for response in call:
                got_response = True
                if not self.connected.is_set():
                    self._first_response()
                self._dispatch(ads.receive(response))
                self._flush()
                if self._cache is not None:
                    self._cache.changed()
            error = XdsError("ADS stream closed by the control plane")
        except grpc.aio.AioRpcError as err:
            if (delta and err.code() == grpc.StatusCode.UNIMPLEMENTED
                    and self.config.protocol == "auto"):
                self._fall_back_to_sotw(err)
                return None
            error = XdsError(f"ADS stream failed: {err.code().name}: {err.details()}")
            error.__cause__ = err
        except Exception as err:  # a bug must not end the client: log, back off, retry
            log.exception("ADS stream to %s broke", self.config.server_address)
            error = XdsError(f"ADS stream failed: {err!r}")
            error.__cause__ = err
        finally:
            self._outbox = None
            outbox.put_nowait(None)
            self._cancel_timers()
            call.cancel()
        return error, got_response

    def _first_response(self) -> None:
        self.connected.set()
        self._outage_reported = False
        if self._cache is not None:
            self._cache.connected()

    def _fall_back_to_sotw(self, err: grpc.aio.AioRpcError) -> None:
        """The server has no delta ADS: carry subscriptions and cached values over to a
        state-of-the-world state machine, for the rest of the client's life."""
        log.warning("xDS server %s does not implement delta ADS (%s); using "
                    "state-of-the-world ADS from now on", self.config.server_address,
                    err.details() or "UNIMPLEMENTED")
        old, new = self._ads, AdsClientProtocol(self.config.node())
        for type_url in dict.fromkeys(t for t, _ in self._watchers):
            new.subscribe(type_url, old.subscriptions(type_url))
            entries = [replace(e, version="") for e in old.cached_resources(type_url).values()]
            new.seed(type_url, entries, self._cache.sotw_version(type_url) if self._cache else "")
        self._ads = new

    def _flush(self) -> None:
        """Send the requests now due, and start the does-not-exist timer of each newly
        requested name. Without a stream, requests wait for the next ``reset()``."""
        if self._outbox is None:
            return
        for request in self._ads.outgoing():
            self._outbox.put_nowait(request)
            names = (request.resource_names_subscribe
                     if isinstance(request, discovery_pb2.DeltaDiscoveryRequest)
                     else request.resource_names)
            for name in names:
                self._start_timer((request.type_url, name))

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            key = (event.type_url, event.name)
            self._cancel_timer(key)
            watchers = list(self._watchers.get(key, ()))
            if isinstance(event, ResourceChanged):
                self._absent.discard(key)
                for watcher in watchers:
                    _notify(watcher.on_changed, event.update)
            elif isinstance(event, ResourceRemoved):
                if key in self._absent:  # already told (by the timer, say)
                    continue
                self._absent.add(key)
                for watcher in watchers:
                    _notify(watcher.on_removed)
            elif isinstance(event, ResourceError):
                for watcher in watchers:
                    if event.has_previous:  # gRFC A88: keep using the previous value
                        _notify(watcher.on_ambient_error, event.error)
                    else:
                        _notify(watcher.on_error, event.error)

    def _report_outage(self, error: XdsError) -> None:
        if self._outage_reported:
            return
        self._outage_reported = True
        for key, watchers in list(self._watchers.items()):
            has_value = self.cached(*key) is not None
            for watcher in list(watchers):
                if has_value:
                    _notify(watcher.on_ambient_error, error)
                else:
                    _notify(watcher.on_error, error)

    # ------------------------------------------------------------ does-not-exist timers

    def _start_timer(self, key: _Key) -> None:
        if (key in self._timers or key not in self._watchers or key in self._absent
                or self.cached(*key) is not None):
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(self.config.resource_timeout,
                                            self._does_not_exist, key)

    def _does_not_exist(self, key: _Key) -> None:
        self._timers.pop(key, None)
        if key not in self._watchers or self.cached(*key) is not None:
            return
        log.info("%s resource %r not received in %.1fs: does not exist",
                 short_name(key[0]), key[1], self.config.resource_timeout)
        self._absent.add(key)
        for watcher in list(self._watchers.get(key, ())):
            _notify(watcher.on_removed)

    def _cancel_timer(self, key: _Key) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _cancel_timers(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


def _notify(callback: Callable[..., None], *args: Any) -> None:
    """Run one watcher callback; a failing watcher must not break the stream."""
    try:
        callback(*args)
    except Exception:
        log.exception("xDS watcher callback %r failed", callback)
