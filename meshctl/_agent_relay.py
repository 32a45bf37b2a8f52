"""How ``meshctl agent`` relays ADS: raw bytes over one mTLS channel per certificate.

* :class:`UpstreamChannels` — one channel to the control plane per workload
  certificate: streams opened after a rotation use the new one; streams in flight keep
  theirs, and the old channel is closed when its last stream ends.
* :class:`AdsForwarder` — a generic handler for the two ADS methods, no serializers:
  each downstream stream is one upstream stream; status, details, initial and
  trailing metadata come back; a downstream cancel cancels upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from meshlib.contract import CertificateError
from meshlib.security import WorkloadCertificate, read_roots

__all__ = ["ADS_METHODS", "ADS_SERVICE", "AdsForwarder", "UpstreamChannels"]

log = logging.getLogger("meshctl.agent")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
ADS_METHODS = ("StreamAggregatedResources", "DeltaAggregatedResources")
# Not forwarded: HTTP/2 and gRPC's own headers (each hop sets its own), and credentials
# the workload's xDS client attaches (google_default sends a Google token).
_HOP_HEADERS = frozenset({"user-agent", "te", "content-type", "host", "authorization"})
# A push of a whole mesh can exceed gRPC's 4 MB default; the workload enforces its own.
_UPSTREAM_OPTIONS: tuple[tuple[str, Any], ...] = (("grpc.max_receive_message_length", -1),)


@dataclass(eq=False)
class _Upstream:
    channel: grpc.aio.Channel
    serial: int | None  # of the client certificate (None: plaintext)
    streams: int = 0


class UpstreamChannels:
    """The channels to the control plane: one per workload certificate.

    :meth:`install` makes a new mTLS channel for a new certificate (the roots: the
    pinned ``ca_root`` file, re-read then, else the certificate's own roots); streams
    opened afterwards use it (:meth:`use`), and the previous channel is closed once its
    last stream ends. ``insecure``: one plaintext channel, no certificate.
    Call everything from the event loop.
    """

    def __init__(self, address: str, *, ca_root: Path | None = None,
                 server_name: str = "", insecure: bool = False) -> None:
        self.address = address
        self._ca_root = ca_root
        self._options = list(_UPSTREAM_OPTIONS)
        if server_name:
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self._current: _Upstream | None = None
        self._retired: list[_Upstream] = []
        self._closing: set[asyncio.Task[None]] = set()
        self.insecure = insecure
        if insecure:
            self._current = _Upstream(
                grpc.aio.insecure_channel(address, options=self._options), None)

    @property
    def serials(self) -> list[int | None]:
        """The certificate serials of the open channels, the current one last."""
        return [u.serial for u in (*self._retired, *filter(None, [self._current]))]

    def install(self, cert: WorkloadCertificate) -> None:
        """Use ``cert`` for streams opened from now on."""
        if self.insecure or (self._current is not None and self._current.serial == cert.serial):
            return
        try:
            roots = read_roots(self._ca_root) if self._ca_root is not None else cert.roots_pem
        except CertificateError as err:
            log.error("keeping the previous upstream channel: %s", err)
            return
        credentials = grpc.ssl_channel_credentials(roots, cert.key_pem, cert.chain_pem)
        old, self._current = self._current, _Upstream(
            grpc.aio.secure_channel(self.address, credentials, options=self._options),
            cert.serial)
        log.info("upstream: streams to %s now use certificate serial %x (%s)", self.address,
                 cert.serial, cert.spiffe_id)
        if old is not None:
            self._retired.append(old)
            self._close_if_unused(old)

    @contextlib.contextmanager
    def use(self) -> Iterator[_Upstream]:
        """The current channel, counted as in use until the ``with`` block ends."""
        upstream = self._current
        if upstream is None:
            raise CertificateError("no workload certificate yet")
        upstream.streams += 1
        try:
            yield upstream
        finally:
            upstream.streams -= 1
            self._close_if_unused(upstream)

    def _close_if_unused(self, upstream: _Upstream) -> None:
        if upstream is self._current or upstream.streams or upstream not in self._retired:
            return
        self._retired.remove(upstream)
        task = asyncio.get_running_loop().create_task(upstream.channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        log.info("upstream: channel of certificate serial %x closed (no stream left)",
                 upstream.serial or 0)

    async def close(self) -> None:
        """Close every channel (streams still open are cancelled)."""
        channels = [u.channel for u in (*self._retired, *filter(None, [self._current]))]
        self._current, self._retired = None, []
        await asyncio.gather(*(c.close() for c in channels), *self._closing,
                             return_exceptions=True)


def _forwardable(metadata: Sequence[tuple[str, Any]] | None) -> tuple[tuple[str, Any], ...]:
    return tuple((k, v) for k, v in (metadata or ())
                 if not k.startswith((":", "grpc-")) and k not in _HOP_HEADERS)


class AdsForwarder(grpc.GenericRpcHandler):
    """Relays the two ADS methods, as raw bytes, to the control plane over
    ``channels``; every other method is UNIMPLEMENTED.

    Example::

        server = grpc.aio.server()
        server.add_generic_rpc_handlers([AdsForwarder(channels)])
    """

    def __init__(self, channels: UpstreamChannels, *, identity: str = "") -> None:
        self._channels = channels
        self.identity = identity  # for messages
        self._handlers = {f"/{ADS_SERVICE}/{name}": grpc.stream_stream_rpc_method_handler(
            self._behaviour(f"/{ADS_SERVICE}/{name}")) for name in ADS_METHODS}
        self.streams = 0  # open

    def service(self, handler_call_details: grpc.HandlerCallDetails
                ) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)

    def _behaviour(self, method: str) -> Any:
        async def forward(requests: AsyncIterator[bytes],
                          context: grpc.aio.ServicerContext) -> None:
            await self.forward(method, requests, context)

        return forward

    async def forward(self, method: str, requests: AsyncIterator[bytes],
                      context: grpc.aio.ServicerContext) -> None:
        """One downstream stream, relayed over one upstream stream."""
        try:
            with self._channels.use() as upstream:
                self.streams += 1
                try:
                    code, details, trailers = await self._relay(
                        upstream.channel, method, requests, context)
                finally:
                    self.streams -= 1
        except CertificateError as err:  # not yet: the workload's client retries
            code, details, trailers = grpc.StatusCode.UNAVAILABLE, f"meshctl agent: {err}", ()
        context.set_trailing_metadata(_forwardable(trailers))
        if code != grpc.StatusCode.OK:
            context.set_code(code)
            context.set_details(self._explain(code, details or ""))

    async def _relay(self, channel: grpc.aio.Channel, method: str,
                     requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
                     ) -> tuple[grpc.StatusCode, str, Sequence[tuple[str, Any]]]:
        call = channel.stream_stream(method)(  # no serializers: bytes in, bytes out
            metadata=_forwardable(context.invocation_metadata()),
            timeout=context.time_remaining())
        pump = asyncio.create_task(_pump(requests, call))
        try:
            headers = _forwardable(await call.initial_metadata())
            if headers:
                await context.send_initial_metadata(headers)
            async for response in call:
                await context.write(response)
            return await call.code(), await call.details(), await call.trailing_metadata()
        except grpc.aio.AioRpcError as err:
            return err.code(), err.details() or "", err.trailing_metadata() or ()
        finally:  # the downstream cancelled (this task too), or the upstream ended
            call.cancel()
            pump.cancel()

    def _explain(self, code: grpc.StatusCode, details: str) -> str:
        """The upstream's details, with what the agent knows when it failed to reach
        the control plane (logged too: the workload's client may not show it)."""
        if code != grpc.StatusCode.UNAVAILABLE:
            return details
        low = details.lower()
        if "failed to connect" not in low:  # a stream that broke: the client reconnects
            return details
        address = self._channels.address
        if any(word in low for word in ("handshake", "ssl", "tls", "certificate")):
            why = (f"the control plane at {address} failed TLS verification against the "
                   "pinned root")
        elif "socket closed" in low:  # TLS 1.3: a refused client certificate shows so
            why = (f"the control plane at {address} closed the connection: it refused this "
                   f"workload's certificate ({self.identity or 'none'}), or speaks no TLS")
        else:
            why = f"the control plane at {address} is unreachable"
        log.warning("upstream stream failed: %s: %s", why, details)
        return f"meshctl agent: {why}: {details}"


async def _pump(requests: AsyncIterator[bytes], call: grpc.aio.StreamStreamCall) -> None:
    """The workload's requests, upstream; half-close when it half-closes."""
    try:
        async for request in requests:
            await call.write(request)
        await call.done_writing()
    except (grpc.RpcError, asyncio.InvalidStateError):
        pass  # the upstream call ended: its status goes back to the workload
    except Exception:
        log.exception("reading the workload's requests failed; ending the stream")
        call.cancel()
