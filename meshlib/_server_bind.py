"""Binding a gRPC server for an mTLS mode: STRICT, PERMISSIVE or DISABLE.

* ``STRICT``: TLS with a required client certificate from the mesh CA, checked in
  gRPC's handshake;
* ``DISABLE``: plaintext;
* ``PERMISSIVE``: both on one port. gRPC cannot sniff TLS from plaintext itself, so
  the public port is a small in-process front (:class:`Front`) that peeks at the first
  byte of each connection and splices it to an internal TLS or plaintext port (the
  one mode with an extra hop: it is meant for migrations).

Ports are never shared: the servers refuse ``SO_REUSEPORT``
(:data:`~meshlib.contract.NO_REUSEPORT`) and a busy address raises
:class:`~meshlib.contract.BindError` naming it.

The server certificate rotates without a restart: gRPC asks the credentials for the
current certificate on each new handshake (``grpc.dynamic_ssl_server_credentials``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc

from meshlib.contract import MTLS_MODES, NO_REUSEPORT, BindError, check_free
from meshlib.contract.listen import address_of
from meshlib.errors import MeshError
from meshlib.security import CertificateSource, WorkloadCertificate

__all__ = ["MTLS_MODES", "Front", "build_server", "server_credentials"]

_TLS_HANDSHAKE = 0x16  # the first byte of a TLS ClientHello record


def server_credentials(source: CertificateSource) -> grpc.ServerCredentials:
    """mTLS server credentials that follow ``source``: each new handshake uses the
    newest certificate, and requires a client certificate from the mesh roots."""
    first = source.current
    if first is None:
        raise MeshError("no workload certificate yet: cannot serve mTLS")
    served = [first]

    def config(cert: WorkloadCertificate) -> Any:
        return grpc.ssl_server_certificate_configuration(
            [(cert.key_pem, cert.chain_pem)], root_certificates=cert.roots_pem)

    def fetch() -> Any:
        current = source.current
        if current is None or current is served[0]:
            return None  # keep what gRPC has
        served[0] = current
        return config(current)

    return grpc.dynamic_ssl_server_credentials(config(first), fetch,
                                               require_client_authentication=True)


def build_server(*, mode: str, source: CertificateSource | None, host: str, port: int,
                 interceptors: Sequence[Any], aio: bool, options: Sequence[tuple[str, Any]],
                 max_workers: int, loop: asyncio.AbstractEventLoop, service: str = "gRPC"
                 ) -> tuple[Any, Front | None]:
    """A gRPC server (sync or aio) bound to ``host:port`` for ``mode``; for PERMISSIVE
    also the front that owns the public port (running on ``loop``). A busy
    ``host:port`` raises :class:`BindError` ("cannot serve ``service`` on ...")."""
    if mode not in MTLS_MODES:
        raise MeshError(f"unknown mTLS mode {mode!r}: use one of {', '.join(MTLS_MODES)}")
    if mode != "DISABLE" and source is None:
        raise MeshError(f"this server's mTLS mode is {mode} but the Mesh has no identity: "
                        "give Mesh a token, token_file or cert_dir (or set "
                        "MESHLIB_TOKEN_FILE / MESHLIB_CERT_DIR)")
    what = f"serve {service}"
    check_free(host, port, what=what)
    options = [NO_REUSEPORT, *options]
    if aio:
        server = grpc.aio.server(interceptors=list(interceptors), options=options)
    else:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                             interceptors=list(interceptors), options=options)
    address = address_of(host, port)
    if mode == "DISABLE":
        _bind(lambda: server.add_insecure_port(address), address, what)
        return server, None
    credentials = server_credentials(source)  # type: ignore[arg-type]
    if mode == "STRICT":
        _bind(lambda: server.add_secure_port(address, credentials), address, what)
        return server, None
    inner = "127.0.0.1:0"
    tls_port = _bind(lambda: server.add_secure_port(inner, credentials), inner, what)
    plain_port = _bind(lambda: server.add_insecure_port(inner), inner, what)
    front = Front(host, port, tls_port=tls_port, plain_port=plain_port, loop=loop, what=what)
    return server, front


def _bind(add_port: Callable[[], int], address: str, what: str) -> int:
    try:
        port = add_port()
    except RuntimeError:  # grpcio >= 1.5x raises where it used to return 0
        port = 0
    if not port:
        raise BindError(address, "in use or not an address of this host", what=what)
    return port


class Front:
    """PERMISSIVE's one public port: peek at each connection's first byte and splice
    it to the internal TLS port (a TLS ClientHello) or the plaintext one."""

    def __init__(self, host: str, port: int, *, tls_port: int, plain_port: int,
                 loop: asyncio.AbstractEventLoop, what: str = "serve") -> None:
        self.host, self.port = host.strip("[]") or "::", port
        self._what = what
        self._ports = (tls_port, plain_port)
        self._loop = loop
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Listen on the public port (never shared: no ``SO_REUSEPORT``); a busy one
        raises :class:`BindError`."""
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        except OSError as err:
            raise BindError.from_os_error(address_of(self.host, self.port), err,
                                          what=self._what) from None

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  reuse_address=True)

    def stop(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=5)

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            first = await reader.read(1)
            if not first:
                return
            port = self._ports[0] if first[0] == _TLS_HANDSHAKE else self._ports[1]
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            sock = up_writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up_writer.write(first)
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError):
            writer.close()


