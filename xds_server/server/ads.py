"""How resources go on the wire: the gRPC ADS service, a thin shell around the
sans-IO stream state machines.

Per stream, one asyncio task reads requests and feeds them to the state machine;
the handler itself waits for the outbox, writes the queued responses in ADS order
(clusters and endpoints before listeners and routes) and reports them
(``on_stream_response``). Closing a stream cancels its watches.

Robustness: a NACK, a stale nonce, a request without ``type_url`` or for a type we do
not serve never ends a stream (types outside :data:`xds_server.resources.ADS_ORDER`
are logged once per stream and get no response). A gate callback that raises ends
the stream with ``UNAVAILABLE``; an internal error, with ``INTERNAL`` (the client
reconnects). The server process never crashes on what a client sends.

Authentication (``authenticated=True``, the control plane's default): the port serves
mTLS and every stream must come with a client certificate carrying one SPIFFE ID
(:func:`identity_of`); a stream without one ends with ``UNAUTHENTICATED`` before it
reads a request. The stream's node is *vouched* before anyone sees it: metadata
``NAMESPACE`` becomes the identity's namespace and ``MESHLIB_PEER_IDENTITY`` the
identity, whatever the client wrote there — so the snapshot group, the registry and
every callback see what the handshake proved, and a forged namespace changes nothing.
Without authentication ``MESHLIB_PEER_IDENTITY`` is removed from what clients send.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc

from meshlib.contract import (
    NAMESPACE_METADATA_KEY,
    NO_REUSEPORT,
    PEER_IDENTITY_METADATA_KEY,
    BindError,
    SpiffeId,
    check_free,
    one_spiffe_uri,
)
from meshlib.contract.listen import address_of
from xds_server.cache.watch import ConfigWatcher
from xds_server.server.callbacks import CallbackFuncs, Callbacks
from xds_server.server.delta_protocol import DeltaStream
from xds_server.server.registry import StreamRegistry
from xds_server.server.sotw_protocol import SotwStream
from xds_server.server.stream_base import Outgoing, StreamBase, StreamRejected

__all__ = ["AdsServer", "identity_of", "serve", "serve_services", "vouched_node"]

log = logging.getLogger("xds_server.server")


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """The ``AggregatedDiscoveryService`` (state of the world and delta) over a cache.

    ``registry`` shows the open streams. Everything runs on the server's event loop,
    the loop the cache must be used from.

    Example::

        cache = SnapshotCache()
        ads = AdsServer(cache, CallbackFuncs(nack=on_nack))
        server = grpc.aio.server()
        ads.add_to_server(server)
    for service in services:
        service.add_to_server(server)
    """

    def __init__(self, cache: ConfigWatcher, callbacks: Callbacks | None = None, *,
                 authenticated: bool = False) -> None:
        self.cache = cache
        self.authenticated = authenticated
        self.callbacks: Callbacks = callbacks if callbacks is not None else CallbackFuncs()
        self.registry = StreamRegistry()
        self._ids = itertools.count(1)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register this service on ``server``."""
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, server)

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> None:
        """State-of-the-world ADS stream."""
        await self._run(SotwStream, request_iterator, context)

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> None:
        """Incremental ADS stream."""
        await self._run(DeltaStream, request_iterator, context)

    async def _run(self, kind: type[SotwStream] | type[DeltaStream],
                   requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        stream_id = next(self._ids)
        identity = identity_of(context) if self.authenticated else None
        if self.authenticated and identity is None:
            log.warning("stream %d from %s refused: no mesh identity", stream_id,
                        context.peer())
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "anonymous xDS clients are refused: connect over mTLS with the workload's "
                "mesh certificate (one spiffe:// URI SAN)")
        sotw = kind is SotwStream
        wake = asyncio.Event()
        stream = kind(stream_id, self.cache, callbacks=self.callbacks, on_ready=wake.set,
                      on_change=self.registry.changed,
                      vouch=functools.partial(vouched_node, identity=identity,
                                              stream_id=stream_id))
        open_hook = self.callbacks.on_stream_open if sotw else self.callbacks.on_delta_stream_open
        try:
            open_hook(stream_id, "")
        except Exception as exc:
            log.warning("stream %d refused on open: %r", stream_id, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"stream refused: {exc}")
        log.debug("stream %d (%s) opened by %s", stream_id, kind.protocol, context.peer())
        self.registry.add(stream)
        reader = asyncio.create_task(_read(stream, requests, wake), name=f"ads-read-{stream_id}")
        try:
            while True:
                await wake.wait()
                wake.clear()
                for out in stream.drain():
                    await context.write(out.response)
                    self._written(stream, out, sotw)
                if reader.done() and not stream.pending():
                    break
            error = None if reader.cancelled() else reader.exception()
            if isinstance(error, StreamRejected):
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"stream refused: {error}")
            elif error is not None:
                log.error("stream %d failed", stream_id, exc_info=error)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        finally:
            reader.cancel()
            self._closed(stream, sotw)

    def _written(self, stream: StreamBase, out: Outgoing, sotw: bool) -> None:
        hook = (self.callbacks.on_stream_response if sotw
                else self.callbacks.on_stream_delta_response)
        _safe(hook, stream.stream_id, stream.node, out.request, out.response,
              out.snapshot_created_at)

    def _closed(self, stream: StreamBase, sotw: bool) -> None:
        stream.close()
        self.registry.remove(stream.stream_id)
        node = stream.announced_node()
        if node is not None:
            _safe(self.callbacks.on_node_disconnected, stream.stream_id, node, stream.protocol)
        hook = self.callbacks.on_stream_closed if sotw else self.callbacks.on_delta_stream_closed
        _safe(hook, stream.stream_id, stream.node)
        log.debug("stream %d (%s, node %r) closed", stream.stream_id, stream.protocol,
                  node.id if node is not None else "")


def identity_of(context: grpc.aio.ServicerContext) -> SpiffeId | None:
    """The SPIFFE ID the peer's certificate proved (the mTLS handshake verified it
    against the mesh roots), or None: plaintext, no certificate, or not exactly one
    valid mesh SPIFFE ID among its SANs."""
    if context.peer_identity_key() != "x509_subject_alternative_name":
        return None
    uri = one_spiffe_uri(context.peer_identities() or ())
    if uri is None:
        return None
    try:
        return SpiffeId.parse(uri)
    except ValueError:
        return None


def vouched_node(node: base_pb2.Node, *, identity: SpiffeId | None,
                 stream_id: int = 0) -> base_pb2.Node:
    """``node`` as the control plane trusts it: with ``identity``, metadata ``NAMESPACE``
    is its namespace and ``MESHLIB_PEER_IDENTITY`` the identity (a differing claim is
    logged and ignored); without, ``MESHLIB_PEER_IDENTITY`` is dropped (only the
    control plane writes it)."""
    fields = node.metadata.fields
    claimed = fields[NAMESPACE_METADATA_KEY].string_value \
        if NAMESPACE_METADATA_KEY in fields else ""
    if identity is None and PEER_IDENTITY_METADATA_KEY not in fields:
        return node
    vouched = base_pb2.Node()
    vouched.CopyFrom(node)
    metadata = vouched.metadata
    if identity is None:
        del metadata.fields[PEER_IDENTITY_METADATA_KEY]
        return vouched
    if claimed and claimed != identity.namespace:
        log.warning("stream %d: node %r claims namespace %r; its identity %s says %r: "
                    "the identity wins", stream_id, node.id, claimed, identity,
                    identity.namespace)
    metadata.update({NAMESPACE_METADATA_KEY: identity.namespace,
                     PEER_IDENTITY_METADATA_KEY: str(identity)})
    return vouched


async def _read(stream: SotwStream | DeltaStream, requests: AsyncIterator[Any],
                wake: asyncio.Event) -> None:
    try:
        async for request in requests:
            stream.receive(request)
    finally:
        wake.set()


def _safe(hook: Any, *args: Any) -> None:
    try:
        hook(*args)
    except Exception:
        log.exception("callback %s failed", getattr(hook, "__name__", hook))


def _host_port(address: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(address, str):
        host, _, port = address.rpartition(":")
        return host.strip("[]"), int(port)
    return address


async def serve(
    address: str | tuple[str, int],
    cache: ConfigWatcher,
    callbacks: Callbacks | None = None,
    *,
    options: Sequence[tuple[str, Any]] = (),
    services: Sequence[Any] = (),
    credentials: grpc.ServerCredentials | None = None,
    authenticated: bool = False,
) -> tuple[grpc.aio.Server, int]:
    """Start a ``grpc.aio`` server with ADS on ``address`` (port 0: any free port).

    Returns the started server (its :class:`AdsServer` is ``server.ads``) and the
    bound port. Stop it with ``await server.stop(grace)``. ``services`` are more
    services for the same port (objects with ``add_to_server(server)``, e.g. the CA's).
    With ``credentials`` the port serves TLS only; ``authenticated`` refuses ADS streams
    without a verified mesh identity (give credentials that require a client
    certificate).

    A busy port raises :class:`~meshlib.contract.BindError` naming the address: the
    port is never shared with another server (:data:`~meshlib.contract.NO_REUSEPORT`),
    so two control planes cannot both answer on it.
    """
    if authenticated and credentials is None:
        raise ValueError("authenticated xDS needs TLS credentials that require a client "
                         "certificate")
    ads = AdsServer(cache, callbacks, authenticated=authenticated)
    server, bound = await serve_services(address, [ads, *services], options=options,
                                         credentials=credentials, what="serve xDS")
    server.ads = ads  # type: ignore[attr-defined]
    return server, bound


async def serve_services(
    address: str | tuple[str, int],
    services: Sequence[Any],
    *,
    options: Sequence[tuple[str, Any]] = (),
    credentials: grpc.ServerCredentials | None = None,
    what: str = "serve",
) -> tuple[grpc.aio.Server, int]:
    """Start a ``grpc.aio`` server for ``services`` (objects with
    ``add_to_server(server)``) on ``address``, TLS with ``credentials``; the started
    server and its bound port. A busy port raises :class:`~meshlib.contract.BindError`
    (``what`` says what for)."""
    host, port = _host_port(address)
    target = address_of(host, port)
    check_free(host, port, what=what)
    server = grpc.aio.server(options=[NO_REUSEPORT, *options])
    for service in services:
        service.add_to_server(server)
    try:
        bound = (server.add_insecure_port(target) if credentials is None
                 else server.add_secure_port(target, credentials))
    except RuntimeError:  # grpcio >= 1.5x raises where it used to return 0
        bound = 0
    if not bound:
        raise BindError(target, "in use or not an address of this host", what=what)
    await server.start()
    return server, bound
