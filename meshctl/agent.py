"""``meshctl agent``: a local plaintext xDS endpoint that forwards over mTLS.

Some xDS clients cannot speak TLS to a control plane at all (Node's
``@grpc/grpc-js-xds`` 1.14 accepts only ``insecure`` and ``google_default`` channel
credentials). For them the agent runs beside the workload, as istio-agent does for
proxyless gRPC::

    workload (xDS client) --plaintext--> agent on 127.0.0.1:PORT or unix:/path
                                          |  mTLS with the workload's certificate,
                                          v  the control plane checked against the pinned root
                                   control plane's xDS port

* **Identity**: the workload's certificate comes from the mesh CA
  (:class:`~meshlib.security.IssuedCertificates`, renewed at half-life) or from
  mounted files (:class:`~meshlib.security.FileCertificates`). The control plane takes
  the stream's namespace from it.
* **Forwarding**: each ADS stream (``StreamAggregatedResources`` and
  ``DeltaAggregatedResources``) is relayed as raw bytes, nothing re-encoded, over one
  upstream stream (:class:`AdsForwarder`). The upstream status, details, initial and
  trailing metadata go back to the workload; a workload that cancels cancels upstream.
  No other method is served.
* **Rotation**: one upstream channel per certificate (:class:`UpstreamChannels`):
  streams opened after a rotation use the new certificate; streams in flight keep
  theirs, and the old channel is closed when its last stream ends.
* **Listening**: loopback or a Unix socket (mode 0600), plaintext, because only the
  workload beside it reaches it (:func:`parse_listen`).

Example (what ``meshctl agent`` runs)::

    certificates = IssuedCertificates("cp:15012", identity, token_file=..., ca_root=...)
    await run_agent(AgentOptions(xds_address="cp:15010", ca_root=Path("root.pem"),
                                 listen=parse_listen("unix:/run/mesh/xds.sock")),
                    certificates)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import signal
import socket
import stat
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from meshlib.contract import NO_REUSEPORT, BindError, CertificateError, check_free
from meshlib.contract.files import write_atomic
from meshlib.contract.listen import address_of
from meshlib.security import (
    CertificateSource,
    FileCertificates,
    IssuedCertificates,
    WorkloadCertificate,
    read_roots,
    write_files,
)

__all__ = [
    "ADS_METHODS",
    "ADS_SERVICE",
    "DEFAULT_CA_PORT",
    "DEFAULT_LISTEN",
    "AdsForwarder",
    "Agent",
    "AgentOptions",
    "Listen",
    "UpstreamChannels",
    "check_listen",
    "first_certificate",
    "parse_listen",
    "run_agent",
]

log = logging.getLogger("meshctl.agent")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
ADS_METHODS = ("StreamAggregatedResources", "DeltaAggregatedResources")
DEFAULT_LISTEN = "127.0.0.1:15011"
DEFAULT_CA_PORT = 15012  # the control plane's certificate service when secure
_WHAT = "serve the xDS agent"
# Not forwarded: HTTP/2 and gRPC's own headers (each hop sets its own), and credentials
# the workload's xDS client attaches (google_default sends a Google token).
_HOP_HEADERS = frozenset({"user-agent", "te", "content-type", "host", "authorization"})
# A push of a whole mesh can exceed gRPC's 4 MB default; the workload enforces its own.
_UPSTREAM_OPTIONS: tuple[tuple[str, Any], ...] = (("grpc.max_receive_message_length", -1),)
# How long the first certificate may take before the agent says it is still waiting.
_FIRST_CERT_PATIENCE = 10.0
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.RESOURCE_EXHAUSTED)


# --------------------------------------------------------------------------- listen


@dataclass(frozen=True, slots=True)
class Listen:
    """Where the agent listens: a loopback ``host``:``port``, or a Unix socket ``path``."""

    host: str = ""
    port: int = 0
    path: Path | None = None

    def target(self, port: int | None = None) -> str:
        """The address as gRPC targets and bootstraps write it (``unix:///abs/path`` or
        ``127.0.0.1:PORT``), with the bound ``port`` once known."""
        if self.path is not None:
            return f"unix://{self.path}"
        return address_of(self.host, self.port if port is None else port)


def parse_listen(value: str, *, allow_non_loopback: bool = False) -> Listen:
    """``unix:/path`` / ``unix:///path`` (a Unix socket; relative paths are made
    absolute) or ``HOST:PORT`` (an empty host is 127.0.0.1). A host that is not a
    loopback address is a ``ValueError`` unless ``allow_non_loopback``: anyone who
    reaches the port would get this workload's xDS view, under its identity."""
    if value.startswith("unix:"):
        rest = value.removeprefix("unix:")
        if rest.startswith("//"):  # unix:///abs/path; unix://host/... is not a path
            if not rest.startswith("///"):
                raise ValueError(f"expected unix:/PATH or unix:///PATH, got {value!r}")
            rest = rest[2:]
        if not rest:
            raise ValueError(f"expected unix:/PATH, got {value!r}")
        return Listen(path=Path(os.path.abspath(rest)))
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT or unix:/PATH, got {value!r}")
    host = host.strip("[]") or "127.0.0.1"
    if not allow_non_loopback and not _is_loopback(host):
        raise ValueError(
            f"{host} is not a loopback address: the agent serves this workload's "
            "configuration, under its identity, in plaintext, to whoever connects. "
            "Listen on 127.0.0.1, ::1 or a Unix socket (or pass --allow-non-loopback "
            "if the network really is private)")
    return Listen(host=host, port=int(port))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_unix_path(path: Path) -> None:
    """Make the socket's directory (0700) if missing; refuse a directory others may
    write (unless sticky, as /tmp), a path that is not a socket, and a socket another
    process serves (gRPC would unlink and take it over)."""
    address = f"unix:{path}"
    parent = path.parent
    try:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = parent.stat().st_mode
    except OSError as err:
        raise BindError.from_os_error(address, err, what=_WHAT) from None
    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
        raise BindError(address, f"its directory {parent} is writable by other users "
                        "(who could replace the socket): use a private directory",
                        what=_WHAT)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError(address, "the path exists and is not a socket", what=_WHAT,
                        errno=errno.EEXIST)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:  # a stale socket of a stopped agent: gRPC replaces it
            return
    raise BindError(address, "address already in use (another agent serves it)",
                    what=_WHAT, errno=errno.EADDRINUSE)


def check_listen(listen: Listen) -> None:
    """:class:`BindError` unless the agent can listen there now."""
    if listen.path is not None:
        _check_unix_path(listen.path)
    else:
        check_free(listen.host, listen.port, what=_WHAT)


# --------------------------------------------------------------------------- upstream


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


# --------------------------------------------------------------------------- forwarding


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
        address = self._channels.address
        if any(word in low for word in ("handshake", "ssl", "tls", "certificate")):
            why = (f"the control plane at {address} failed TLS verification against the "
                   "pinned root")
        elif "socket closed" in low:  # TLS 1.3: a refused client certificate shows so
            why = (f"the control plane at {address} closed the connection: it refused this "
                   f"workload's certificate ({self.identity or 'none'}), or speaks no TLS")
        elif any(word in low for word in ("failed to connect", "connection refused",
                                          "dns resolution", "connect")):
            why = f"the control plane at {address} is unreachable"
        else:
            return details
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


# --------------------------------------------------------------------------- the agent


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentOptions:
    """``meshctl agent`` flags. ``ca_root``: the pinned root the control plane is
    verified against (None: the certificate's own roots, e.g. a mounted ``ca.pem``)."""

    xds_address: str
    listen: Listen = field(default_factory=lambda: parse_listen(DEFAULT_LISTEN))
    ca_root: Path | None = None
    server_name: str = ""  # the name the control plane's certificate must carry
    insecure_upstream: bool = False  # plaintext to the control plane (run with --insecure)
    out_dir: Path | None = None  # also write cert.pem/key.pem/ca.pem here, on rotation too
    ready_file: Path | None = None  # written (the listen target) once serving
    stop: asyncio.Event | None = None


class Agent:
    """The listening side: an aio gRPC server relaying ADS to :class:`UpstreamChannels`.

    Example::

        agent = Agent(options, certificates)      # certificates: a CertificateSource
        target = await agent.start()              # "127.0.0.1:15011" / "unix:///..."
        ...
        await agent.stop()
    """

    def __init__(self, options: AgentOptions, certificates: CertificateSource | None) -> None:
        self.options = options
        self.certificates = certificates
        self.channels = UpstreamChannels(options.xds_address, ca_root=options.ca_root,
                                         server_name=options.server_name,
                                         insecure=options.insecure_upstream)
        identity = "" if certificates is None or certificates.current is None \
            else str(certificates.current.spiffe_id)
        self.forwarder = AdsForwarder(self.channels, identity=identity)
        self.target = ""
        self._server: grpc.aio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0

    async def start(self) -> str:
        """Install the current certificate, listen, serve; the listen target.
        Raises :class:`BindError`."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        if self.certificates is not None:
            self.certificates.subscribe(self._on_certificate)
        listen = self.options.listen
        check_listen(listen)
        server = grpc.aio.server(options=[NO_REUSEPORT])
        server.add_generic_rpc_handlers([self.forwarder])
        bind = f"unix:{listen.path}" if listen.path is not None else listen.target()
        old_umask = os.umask(0o177)  # the socket file is created 0600
        try:
            port = server.add_insecure_port(bind)
        except RuntimeError:
            port = 0
        finally:
            os.umask(old_umask)
        if not port:
            raise BindError(listen.target(), "in use or not an address of this host",
                            what=_WHAT)
        await server.start()
        self._server = server
        self.target = listen.target(port)
        if self.options.ready_file is not None:
            write_atomic(self.options.ready_file, f"{self.target}\n".encode(), mode=0o644)
        return self.target

    def _on_certificate(self, cert: WorkloadCertificate) -> None:
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._thread:
            self._apply(cert)
        else:
            loop.call_soon_threadsafe(self._apply, cert)

    def _apply(self, cert: WorkloadCertificate) -> None:
        self.channels.install(cert)
        if self.options.out_dir is not None:
            try:
                self.options.out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                write_files(self.options.out_dir, cert)
            except OSError as err:
                log.error("cannot write the certificate files to %s: %s",
                          self.options.out_dir, err)

    async def stop(self, grace: float = 1.0) -> None:
        """Stop serving (streams get ``grace`` seconds), close the upstream channels,
        remove the ready file and the socket."""
        if self.options.ready_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self.options.ready_file.unlink()
        if self._server is not None:
            await self._server.stop(grace)
        await self.channels.close()
        path = self.options.listen.path
        if path is not None and self._server is not None:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()


async def first_certificate(certificates: CertificateSource) -> None:
    """Try for the first certificate now: a CA that refuses, one that fails
    verification against the pinned root, or unreadable mounted files raise
    :class:`CertificateError`; a CA that is away is left to the renewal loop."""
    if isinstance(certificates, FileCertificates):
        certificates.load()
    elif isinstance(certificates, IssuedCertificates):
        try:
            await certificates.fetch()
        except CertificateError as err:
            if err.code not in _TRANSIENT:
                raise
            log.warning("no certificate yet, retrying: %s", err)


async def _wait_first(certificates: CertificateSource, renew: asyncio.Task[None],
                      stop: asyncio.Event) -> bool:
    """Wait for the first certificate (True) or ``stop`` (False), saying so now and then."""
    got = asyncio.Event()
    certificates.subscribe(lambda cert: got.set())
    waiters = {asyncio.ensure_future(got.wait()), asyncio.ensure_future(stop.wait())}
    waited = 0.0
    try:
        while not got.is_set() and not stop.is_set():
            await asyncio.wait({*waiters, renew}, timeout=_FIRST_CERT_PATIENCE,
                               return_when=asyncio.FIRST_COMPLETED)
            if renew.done():  # the renewal loop ended: a bug, not a CA away; surface it
                renew.result()
                raise CertificateError("certificate renewal stopped")
            waited += _FIRST_CERT_PATIENCE
            if not got.is_set() and not stop.is_set():
                log.warning("still no workload certificate after %.0f s", waited)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return got.is_set()


async def run_agent(options: AgentOptions, certificates: CertificateSource | None) -> None:
    """Run until SIGTERM/SIGINT or ``options.stop``: check the listen address, get the
    first certificate, serve. Raises :class:`BindError` and :class:`CertificateError`."""
    loop = asyncio.get_running_loop()
    stop = options.stop or asyncio.Event()
    signals = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
            signals.append(sig)
    agent: Agent | None = None
    renew: asyncio.Task[None] | None = None
    try:
        check_listen(options.listen)  # a busy port: say so before asking the CA
        if certificates is not None:
            await first_certificate(certificates)
            renew = loop.create_task(certificates.run(), name="certificates")
            if not await _wait_first(certificates, renew, stop):
                return
        agent = Agent(options, certificates)
        target = await agent.start()
        how = "plaintext (--insecure-upstream)" if options.insecure_upstream else \
            f"mTLS as {agent.forwarder.identity}"
        log.info("agent ready on %s, forwarding ADS to %s over %s", target,
                 options.xds_address, how)
        await stop.wait()
        log.info("stopping")
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if agent is not None:
            await agent.stop()
        if renew is not None:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
