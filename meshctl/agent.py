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

The listening rules live in ``meshctl._agent_listen``, the relay in
``meshctl._agent_relay``; this module wires them to the certificates and the process.

Example (what ``meshctl agent`` runs)::

    certificates = IssuedCertificates("cp:15012", identity, token_file=..., ca_root=...)
    await run_agent(AgentOptions(xds_address="cp:15010", ca_root=Path("root.pem"),
                                 listen=parse_listen("unix:/run/mesh/xds.sock")),
                    certificates)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from meshctl._agent_listen import DEFAULT_LISTEN, WHAT, Listen, check_listen, parse_listen
from meshctl._agent_relay import ADS_METHODS, ADS_SERVICE, AdsForwarder, UpstreamChannels
from meshlib.contract import NO_REUSEPORT, BindError, CertificateError
from meshlib.contract.files import write_atomic
from meshlib.security import (
    CertificateSource,
    FileCertificates,
    IssuedCertificates,
    WorkloadCertificate,
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

DEFAULT_CA_PORT = 15012  # the control plane's certificate service when secure
# How long the first certificate may take before the agent says it is still waiting.
_FIRST_CERT_PATIENCE = 10.0
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.RESOURCE_EXHAUSTED)


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
                            what=WHAT)
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


async def _unless_stopped(step: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``step`` (its exception propagates) unless ``stop`` comes first (False)."""
    task = asyncio.ensure_future(step)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False
    task.result()
    return True


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
            if not await _unless_stopped(first_certificate(certificates), stop):
                return
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
