"""``mesh.http_client()``: httpx clients whose transport runs the mesh pipeline.

A request to ``http://<service>[:port]/path`` (``name``, ``name.namespace`` or the
FQDN, as for gRPC targets) is routed by its HTTPRoute (path, headers, ``:method``),
sent to a cluster by weight (canary, A/B) and to an endpoint by the cluster's
balancer, breaker and limits, and retried on a failure the route's policy names —
for idempotent methods only (``GET``, ``HEAD``, ``OPTIONS``, ``PUT``, ``DELETE``,
``TRACE``) with a body that can be sent again, unless ``retry_methods`` says
otherwise. Statuses map to the policy's gRPC codes as Envoy maps them: 502, 503 and
504 and connection failures are ``UNAVAILABLE``, other 5xx ``UNKNOWN``; 4xx are the
caller's business (not retried, not counted against the endpoint). When retries run
out the caller gets the last response (or the last connection error), as from a plain
httpx client.

With an identity, a destination that takes mTLS gets it: the client certificate is
the Mesh's current one, and the server must present the destination's identity,
checked by the TLS handshake against the certificate's DNS SAN (the
``sni_hostname`` httpx passes down) — the same check gRPC calls make.

``https://`` URLs, IP literals and ``localhost`` go out unchanged through a plain
httpx transport (mesh services are called as ``http://<service>``: the mesh adds the
TLS); so does a host the control plane says is not in the mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import ssl
import tempfile
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import grpc
import httpx

from meshlib._cluster_state import EndpointState
from meshlib._pipeline import HTTP_TO_GRPC, Call, resolve_failure
from meshlib.errors import CallError, CertificateError

if TYPE_CHECKING:
    from meshlib._clients import Clients
    from meshlib._mesh import Mesh
    from meshlib._resolver import Target
    from meshlib._route_table import RouteTable
    from meshlib.security import WorkloadCertificate

__all__ = ["IDEMPOTENT_METHODS", "AsyncMeshTransport", "MeshTransport"]

#: Methods retried by default (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
_MAX_URLS = 4096  # endpoint URLs kept per transport
_RETIRE_AFTER = 300.0  # s a rotated-out TLS transport lives on for in-flight responses


class _FailedAttempt(CallError):
    """An attempt whose response (or connection error) counts as a failure."""

    def __init__(self, code: grpc.StatusCode, response: httpx.Response | None,
                 error: BaseException | None) -> None:
        super().__init__(f"HTTP attempt failed with {code.name}", code=code)
        self.response = response
        self.error = error


def _status_code(status: int) -> grpc.StatusCode | None:
    """The gRPC code a 5xx counts as for breakers, outliers and retries (None: not a
    failure of the endpoint — 4xx, 429 included, are the caller's business)."""
    if status < 500:
        return None
    return HTTP_TO_GRPC.get(status, grpc.StatusCode.UNKNOWN)  # as Envoy maps them


def _direct(url: httpx.URL) -> bool:
    """Requests the mesh leaves alone: ``https://`` (the caller's own TLS, to a host
    outside the mesh), IP literals and localhost."""
    if url.scheme != "http":
        return True
    host = url.host
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _replayable(request: httpx.Request) -> bool:
    """Whether the body can be sent again (bytes, not a one-shot iterator)."""
    return isinstance(request.stream, httpx.ByteStream)


class _Shared:
    """What the sync and async transports share: the Mesh's clients, routing a
    request into a :class:`~meshlib._pipeline.Call`, building each attempt's request,
    classifying its outcome, and the mTLS context."""

    def __init__(self, clients: Clients, retry_methods: Iterable[str]) -> None:
        self.clients = clients
        self.settings = clients.settings
        self.retry_methods = frozenset(m.upper() for m in retry_methods)
        self._tls: tuple[WorkloadCertificate, ssl.SSLContext] | None = None
        self._tls_lock = threading.Lock()
        self._urls: dict[tuple[str, str, bytes], httpx.URL] = {}

    def target(self, request: httpx.Request) -> Target:
        host = request.url.host
        port = request.url.port
        return self.clients.target(host if port is None else f"{host}:{port}")

    def waited(self, target: Target) -> RouteTable | None:
        """A target's table after waiting for it: None when the host is not a mesh
        service (the request goes out as plain HTTP); raises when the control plane
        gave no answer in time."""
        if target.table is None and target.status != "not_found":
            raise resolve_failure(target, self.settings.resolve_timeout,
                                  self.settings.xds_address)
        return target.table

    def call(self, table: RouteTable, request: httpx.Request) -> Call:
        """Route ``request`` (path and query, headers, ``:method``) into a started
        call, unless a fault delays it (``call.delay``: wait, then ``call.start()``)."""
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1"))
                   for k, v in request.headers.raw]
        headers.append((":method", request.method))
        retry = request.method in self.retry_methods and _replayable(request)
        return Call(table, request.url.raw_path.decode("ascii"), headers, None,
                    self.clients.telemetry, request.method, clock=self.settings.clock,
                    retry=retry, protocol="http", headers=())

    @staticmethod
    def aborted(call: Call, request: httpx.Request) -> httpx.Response | None:
        """The response of an injected abort, or None."""
        if call.aborted is None:
            return None
        status = call.entry.fault.abort_http_status or 503  # type: ignore[union-attr]
        return httpx.Response(status, request=request, text="fault filter abort")

    def attempt_request(self, request: httpx.Request, call: Call,
                        endpoint: EndpointState) -> httpx.Request:
        tls = endpoint.server_name is not None and self.clients.certificates is not None
        key = ("https://" if tls else "http://", endpoint.address, request.url.raw_path)
        url = self._urls.get(key)
        if url is None:  # parsing a URL costs httpx 20-30 µs: keep the ones seen
            if len(self._urls) >= _MAX_URLS:
                self._urls.clear()
            url = self._urls[key] = httpx.URL(
                key[0] + key[1] + key[2].decode("ascii"))
        headers = request.headers.copy()
        for name, value in call.attempt_headers or ():
            if name in ("traceparent", "tracestate", "baggage"):
                headers[name] = value
        extensions = dict(request.extensions)
        if tls:
            extensions["sni_hostname"] = endpoint.server_name
        timeout = call.attempt_timeout
        if timeout is not None:
            extensions["timeout"] = {k: timeout for k in ("connect", "read", "write", "pool")}
        return httpx.Request(request.method, url, headers=headers,
                             stream=request.stream, extensions=extensions)

    @staticmethod
    def outcome(call: Call, endpoint: EndpointState, response: httpx.Response
                ) -> float | None:
        """Account for an attempt that got ``response``: None when it is the call's
        answer (the call is then finished), else the seconds to wait before retrying
        (a 5xx the route retries)."""
        status = response.status_code
        label = str(status)
        size = None
        if call.record is not None:  # the response's size, for telemetry only
            length = response.headers.get("content-length")
            size = int(length) if length and length.isdigit() else None
        code = _status_code(status)
        if code is None:
            call.succeeded(endpoint, label, size)
            return None
        wait = call.failed(endpoint, code, _FailedAttempt(code, response, None), label)
        if wait is None:
            call.finish(label, size)
        return wait

    @staticmethod
    def broken(call: Call, endpoint: EndpointState, error: BaseException) -> float | None:
        """Account for an attempt that raised ``error``: the seconds to wait before
        retrying a connection failure, else None (the call ended with ``error``)."""
        label = type(error).__name__
        if not isinstance(error, httpx.TransportError):
            call.cancelled(endpoint, label)  # cancellation too: the endpoint is released
            call.finish(label)
            return None
        wait = call.failed(endpoint, _UNAVAILABLE,
                           _FailedAttempt(_UNAVAILABLE, None, error), label)
        if wait is None:
            call.finish(label)
        return wait

    def ssl_context(self) -> ssl.SSLContext:
        """mTLS as the Mesh's current certificate, remade when it rotates."""
        source = self.clients.certificates
        cert = source.current if source is not None else None
        if cert is None:
            raise CertificateError("this Mesh has no workload certificate yet: cannot "
                                   "call an mTLS destination")
        with self._tls_lock:
            if self._tls is None or self._tls[0] is not cert:
                self._tls = (cert, _client_context(cert))
            return self._tls[1]


def _secure_options(options: dict[str, Any]) -> dict[str, Any]:
    """Transport options for the mesh's mTLS transport: its ``verify`` is the mesh's."""
    return {k: v for k, v in options.items() if k != "verify"}


def _client_context(cert: WorkloadCertificate) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=cert.roots_pem.decode())
    context.check_hostname = True  # against the destination identity's DNS SAN
    with tempfile.TemporaryDirectory(prefix="meshlib-tls-") as scratch:
        path = os.path.join(scratch, "workload.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(cert.key_pem + b"\n" + cert.chain_pem)
        context.load_cert_chain(path)
    return context


class MeshTransport(httpx.BaseTransport):
    """The sync transport of :meth:`meshlib.Mesh.http_client`.

    Example::

        client = httpx.Client(transport=MeshTransport(mesh))
        client.get("http://reviews/api/reviews/1")
    """

    def __init__(self, mesh: Mesh | Clients, *,
                 retry_methods: Iterable[str] = IDEMPOTENT_METHODS,
                 **transport_options: Any) -> None:
        self._shared = _Shared(getattr(mesh, "clients", mesh), retry_methods)
        self._options = transport_options
        self._plain = httpx.HTTPTransport(**transport_options)
        self._secure: httpx.HTTPTransport | None = None
        self._secure_context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def _transport_for(self, tls: bool) -> httpx.HTTPTransport:
        if not tls:
            return self._plain
        context = self._shared.ssl_context()
        with self._lock:
            if self._secure is None or context is not self._secure_context:
                old, self._secure = self._secure, httpx.HTTPTransport(
                    verify=context, **_secure_options(self._options))
                self._secure_context = context
                if old is not None:  # in-flight requests finish; new ones use the new cert
                    timer = threading.Timer(_RETIRE_AFTER, old.close)
                    timer.daemon = True
                    timer.start()
            return self._secure

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if _direct(request.url):
            return self._plain.handle_request(request)
        shared = self._shared
        settings = shared.settings
        target = shared.target(request)
        table = target.table
        if table is None:
            target.ready.wait(settings.resolve_timeout)
            table = shared.waited(target)
            if table is None:  # not a mesh service: plain HTTP
                return self._plain.handle_request(request)
        call = shared.call(table, request)
        if call.delay:
            settings.sleep(call.delay)
            call.start()
        aborted = shared.aborted(call, request)
        if aborted is not None:
            return aborted
        while True:
            try:
                endpoint = call.pick()
            except BaseException as err:
                call.finish(type(err).__name__)
                raise
            attempt = shared.attempt_request(request, call, endpoint)
            try:
                response = self._transport_for(attempt.url.scheme == "https"
                                               ).handle_request(attempt)
            except BaseException as err:
                wait = shared.broken(call, endpoint, err)
                if wait is None:
                    raise
            else:
                wait = shared.outcome(call, endpoint, response)
                if wait is None:
                    return response
                response.read()  # free the connection before another attempt
                response.close()
            if wait:
                settings.sleep(wait)

    def close(self) -> None:
        self._plain.close()
        if self._secure is not None:
            self._secure.close()


class AsyncMeshTransport(httpx.AsyncBaseTransport):
    """The asyncio transport of :meth:`meshlib.Mesh.async_http_client`."""

    def __init__(self, mesh: Mesh | Clients, *,
                 retry_methods: Iterable[str] = IDEMPOTENT_METHODS,
                 **transport_options: Any) -> None:
        self._shared = _Shared(getattr(mesh, "clients", mesh), retry_methods)
        self._options = transport_options
        self._plain = httpx.AsyncHTTPTransport(**transport_options)
        self._secure: httpx.AsyncHTTPTransport | None = None
        self._secure_context: ssl.SSLContext | None = None
        self._retired: list[httpx.AsyncHTTPTransport] = []

    def _transport_for(self, tls: bool) -> httpx.AsyncHTTPTransport:
        if not tls:
            return self._plain
        context = self._shared.ssl_context()
        if self._secure is None or context is not self._secure_context:
            if self._secure is not None:
                self._retired.append(self._secure)  # closed with the client
            self._secure = httpx.AsyncHTTPTransport(verify=context,
                                                    **_secure_options(self._options))
            self._secure_context = context
        return self._secure

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if _direct(request.url):
            return await self._plain.handle_async_request(request)
        shared = self._shared
        settings = shared.settings
        target = shared.target(request)
        table = target.table
        if table is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(target.wait_async(), settings.resolve_timeout)
            table = shared.waited(target)
            if table is None:  # not a mesh service: plain HTTP
                return await self._plain.handle_async_request(request)
        call = shared.call(table, request)
        sleep = shared.clients.async_sleep
        if call.delay:
            await sleep(call.delay)
            call.start()
        aborted = shared.aborted(call, request)
        if aborted is not None:
            return aborted
        while True:
            try:
                endpoint = call.pick()
            except BaseException as err:
                call.finish(type(err).__name__)
                raise
            attempt = shared.attempt_request(request, call, endpoint)
            try:
                response = await self._transport_for(
                    attempt.url.scheme == "https").handle_async_request(attempt)
            except BaseException as err:
                wait = shared.broken(call, endpoint, err)
                if wait is None:
                    raise
            else:
                wait = shared.outcome(call, endpoint, response)
                if wait is None:
                    return response
                await response.aread()
                await response.aclose()
            if wait:
                await sleep(wait)

    async def aclose(self) -> None:
        await self._plain.aclose()
        for transport in (self._secure, *self._retired):
            if transport is not None:
                await transport.aclose()
