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
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc
import httpx

from meshlib._attempts import (
    _HTTP_TO_GRPC,
    aretry_after,
    attempt_timeout,
    call_timeout,
    fault_abort,
    fault_delay,
    retry_after,
    retryable,
)
from meshlib._channel import resolve_failure
from meshlib._cluster_state import ClusterState, EndpointState
from meshlib.errors import CallError, CertificateError
from meshlib.telemetry._client import Record

if TYPE_CHECKING:
    from meshlib._mesh import Mesh
    from meshlib._resolver import Target
    from meshlib._route_table import RouteEntry, RouteTable
    from meshlib.security._certificates import WorkloadCertificate

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
    return _HTTP_TO_GRPC.get(status, grpc.StatusCode.UNKNOWN)  # as Envoy maps them


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


class _Pipeline:
    """What the sync and async transports share: routing, picking, accounting."""

    def __init__(self, mesh: Mesh, retry_methods: Iterable[str]) -> None:
        self.mesh = mesh
        self.retry_methods = frozenset(m.upper() for m in retry_methods)
        self._tls: tuple[WorkloadCertificate, ssl.SSLContext] | None = None
        self._tls_lock = threading.Lock()
        self._urls: dict[tuple[str, str, bytes], httpx.URL] = {}

    def target(self, request: httpx.Request) -> Target:
        host = request.url.host
        port = request.url.port
        return self.mesh._target(host if port is None else f"{host}:{port}")

    def route(self, table: RouteTable, request: httpx.Request
              ) -> tuple[RouteEntry, ClusterState, float | None, list[tuple[str, str]]]:
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1"))
                   for k, v in request.headers.raw]
        headers.append((":method", request.method))
        entry = table.route(request.url.raw_path.decode("ascii"), headers)  # path?query
        timeout = call_timeout(None, entry.timeout, table.target)
        return entry, entry.pick_cluster(), timeout, headers

    def plan(self, table: RouteTable, request: httpx.Request
             ) -> tuple[float, _Plan | httpx.Response]:
        """Route ``request``: the fault delay to wait first (0 mostly), then the
        request's plan, or the response of an injected abort."""
        entry, cluster, timeout, headers = self.route(table, request)
        delay = 0.0
        if entry.fault is not None:
            delay = fault_delay(entry.fault)
            aborted = _abort_response(entry, table.target, request)
            if aborted is not None:
                return delay, aborted
        retry = entry.retry if request.method in self.retry_methods \
            and _replayable(request) else None
        return delay, _Plan(self.mesh, table, entry, cluster, timeout, headers, retry,
                            request)

    def attempt_request(self, request: httpx.Request, endpoint: EndpointState,
                        record: Record | None, timeout: float | None) -> httpx.Request:
        tls = endpoint.server_name is not None and self.mesh.certificates is not None
        key = ("https://" if tls else "http://", endpoint.address, request.url.raw_path)
        url = self._urls.get(key)
        if url is None:  # parsing a URL costs httpx 20-30 µs: keep the ones seen
            if len(self._urls) >= _MAX_URLS:
                self._urls.clear()
            url = self._urls[key] = httpx.URL(
                key[0] + key[1] + key[2].decode("ascii"))
        headers = request.headers.copy()
        if record is not None:
            for key, value in record.attempt(endpoint) or ():
                if key in ("traceparent", "tracestate", "baggage"):
                    headers[key] = value
        extensions = dict(request.extensions)
        if tls:
            extensions["sni_hostname"] = endpoint.server_name
        if timeout is not None:
            extensions["timeout"] = {k: timeout for k in ("connect", "read", "write", "pool")}
        return httpx.Request(request.method, url, headers=headers,
                             stream=request.stream, extensions=extensions)

    def ssl_context(self) -> ssl.SSLContext:
        """mTLS as the Mesh's current certificate, remade when it rotates."""
        source = self.mesh.certificates
        cert = source.current if source is not None else None
        if cert is None:
            raise CertificateError("this Mesh has no workload certificate yet: cannot "
                                   "call an mTLS destination")
        with self._tls_lock:
            if self._tls is None or self._tls[0] is not cert:
                self._tls = (cert, _client_context(cert))
            return self._tls[1]

    def outcome(self, record: Record | None, cluster: ClusterState,
                endpoint: EndpointState, response: httpx.Response | None,
                error: BaseException | None, retry: bool) -> None:
        """Account for one attempt; raise :class:`_FailedAttempt` when it failed in a
        way the route's retry policy may retry."""
        if error is not None:
            code = _UNAVAILABLE if isinstance(error, httpx.TransportError) else \
                grpc.StatusCode.CANCELLED
            cluster.release(endpoint, code)
            if record is not None:
                record.attempt_end(type(error).__name__, True)
            if isinstance(error, httpx.TransportError):
                raise _FailedAttempt(code, None, error) from error
            raise error
        assert response is not None
        code = _status_code(response.status_code)
        cluster.release(endpoint, code)
        if record is not None:
            record.attempt_end(str(response.status_code), code is not None)
        if code is not None and retry:
            raise _FailedAttempt(code, response, None)


class _Plan:
    """A routed request, ready for its attempts once :meth:`begin` is called."""

    def __init__(self, mesh: Mesh, table: RouteTable, entry: RouteEntry,
                 cluster: ClusterState, timeout: float | None,
                 headers: list[tuple[str, str]], retry: Any, request: httpx.Request) -> None:
        self._args = (mesh, table, entry, cluster, timeout, headers, retry, request)

    def begin(self) -> tuple[ClusterState, Record | None, Any, float | None, float | None,
                             str | None]:
        """Start the clock: (cluster, telemetry record, retry policy, deadline,
        per-try timeout, ring-hash key)."""
        mesh, table, entry, cluster, timeout, headers, retry, request = self._args
        cluster.budget.record_request()
        record = _start_record(mesh, table, entry, cluster, request)
        deadline = None if timeout is None else time.monotonic() + timeout
        per_try = retry.per_try_timeout if retry is not None else None
        hash_key = entry.hash_key(headers) if entry.hash_headers else None
        return cluster, record, retry, deadline, per_try, hash_key


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


def _finish(record: Record | None, response: httpx.Response | None,
            error: BaseException | None) -> None:
    if record is None:
        return
    if response is not None:
        size = response.headers.get("content-length")
        record.finish(str(response.status_code), _status_code(response.status_code)
                      is not None, response_bytes=int(size) if size and size.isdigit()
                      else None)
    else:
        record.finish(type(error).__name__ if error else "error", True)


def _start_record(mesh: Mesh, table: RouteTable, entry: RouteEntry, cluster: ClusterState,
                  request: httpx.Request) -> Record | None:
    telemetry = mesh._telemetry
    if telemetry is None:
        return None
    return telemetry.start(table.target, entry.route.name, cluster.service, request.method,
                           None, table.sampling, table.access_log, protocol="http")


def _abort_response(entry: RouteEntry, target: str, request: httpx.Request
                    ) -> httpx.Response | None:
    fault = entry.fault
    if fault is None:
        return None
    error = fault_abort(fault, target)
    if error is None:
        return None
    status = fault.abort_http_status or 503
    return httpx.Response(status, request=request, text="fault filter abort")


class MeshTransport(httpx.BaseTransport):
    """The sync transport of :meth:`meshlib.Mesh.http_client`.

    Example::

        client = httpx.Client(transport=MeshTransport(mesh))
        client.get("http://reviews/api/reviews/1")
    """

    def __init__(self, mesh: Mesh, *, retry_methods: Iterable[str] = IDEMPOTENT_METHODS,
                 **transport_options: Any) -> None:
        self._pipeline = _Pipeline(mesh, retry_methods)
        self._options = transport_options
        self._plain = httpx.HTTPTransport(**transport_options)
        self._secure: httpx.HTTPTransport | None = None
        self._secure_context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def _transport_for(self, tls: bool) -> httpx.HTTPTransport:
        if not tls:
            return self._plain
        context = self._pipeline.ssl_context()
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
        pipeline = self._pipeline
        target = pipeline.target(request)
        table = target.table
        if table is None:
            mesh = pipeline.mesh
            target.ready.wait(mesh.resolve_timeout)
            table = target.table
            if table is None:
                if target.status == "not_found":  # not a mesh service: plain HTTP
                    return self._plain.handle_request(request)
                raise resolve_failure(target, mesh.resolve_timeout, mesh.xds_address)
        delay, plan = pipeline.plan(table, request)
        if delay:
            time.sleep(delay)
        if isinstance(plan, httpx.Response):
            return plan  # an injected abort
        cluster, record, retry, deadline, per_try, hash_key = plan.begin()

        def once() -> httpx.Response:
            endpoint = cluster.pick(hash_key)
            attempt = pipeline.attempt_request(request, endpoint, record,
                                               attempt_timeout(per_try, deadline))
            try:
                response = self._transport_for(attempt.url.scheme == "https"
                                               ).handle_request(attempt)
            except BaseException as err:  # cancellation too: the endpoint is released
                pipeline.outcome(record, cluster, endpoint, None, err, False)
                raise
            try:
                pipeline.outcome(record, cluster, endpoint, response, None, retry is not None)
            except _FailedAttempt:
                response.read()  # free the connection before another attempt
                response.close()
                raise
            return response

        try:
            try:
                response = once()
            except _FailedAttempt as first:
                if not retryable(first, retry):
                    raise
                assert retry is not None
                response = retry_after(first, once, retry, cluster, deadline,
                                       pipeline.mesh._sleep)
        except BaseException as err:
            response = _last(err, record)
        _finish(record, response, None)
        return response

    def close(self) -> None:
        self._plain.close()
        if self._secure is not None:
            self._secure.close()


class AsyncMeshTransport(httpx.AsyncBaseTransport):
    """The asyncio transport of :meth:`meshlib.Mesh.async_http_client`."""

    def __init__(self, mesh: Mesh, *, retry_methods: Iterable[str] = IDEMPOTENT_METHODS,
                 **transport_options: Any) -> None:
        self._pipeline = _Pipeline(mesh, retry_methods)
        self._options = transport_options
        self._plain = httpx.AsyncHTTPTransport(**transport_options)
        self._secure: httpx.AsyncHTTPTransport | None = None
        self._secure_context: ssl.SSLContext | None = None
        self._retired: list[httpx.AsyncHTTPTransport] = []

    def _transport_for(self, tls: bool) -> httpx.AsyncHTTPTransport:
        if not tls:
            return self._plain
        context = self._pipeline.ssl_context()
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
        pipeline = self._pipeline
        target = pipeline.target(request)
        table = target.table
        if table is None:
            mesh = pipeline.mesh
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(target.wait_async(), mesh.resolve_timeout)
            table = target.table
            if table is None:
                if target.status == "not_found":
                    return await self._plain.handle_async_request(request)
                raise resolve_failure(target, mesh.resolve_timeout, mesh.xds_address)
        delay, plan = pipeline.plan(table, request)
        if delay:
            await asyncio.sleep(delay)
        if isinstance(plan, httpx.Response):
            return plan  # an injected abort
        cluster, record, retry, deadline, per_try, hash_key = plan.begin()

        async def once() -> httpx.Response:
            endpoint = cluster.pick(hash_key)
            attempt = pipeline.attempt_request(request, endpoint, record,
                                               attempt_timeout(per_try, deadline))
            try:
                response = await self._transport_for(
                    attempt.url.scheme == "https").handle_async_request(attempt)
            except BaseException as err:  # cancellation too: the endpoint is released
                pipeline.outcome(record, cluster, endpoint, None, err, False)
                raise
            try:
                pipeline.outcome(record, cluster, endpoint, response, None, retry is not None)
            except _FailedAttempt:
                await response.aread()
                await response.aclose()
                raise
            return response

        again: Callable[[], Awaitable[httpx.Response]] = once
        try:
            try:
                response = await once()
            except _FailedAttempt as first:
                if not retryable(first, retry):
                    raise
                assert retry is not None
                response = await aretry_after(first, again, retry, cluster, deadline)
        except BaseException as err:
            response = _last(err, record)
        _finish(record, response, None)
        return response

    async def aclose(self) -> None:
        await self._plain.aclose()
        for transport in (self._secure, *self._retired):
            if transport is not None:
                await transport.aclose()


def _last(err: BaseException, record: Record | None) -> httpx.Response:
    """What the caller gets when the attempts failed: the last response, or else the
    last connection error (as httpx raised it) or meshlib's refusal, raised."""
    failed: BaseException | None = err
    while failed is not None and not isinstance(failed, _FailedAttempt):
        failed = failed.__cause__ or getattr(failed, "last_error", None)
    if isinstance(failed, _FailedAttempt) and failed.response is not None:
        return failed.response
    final = failed.error if isinstance(failed, _FailedAttempt) and failed.error else err
    _finish(record, None, final)
    raise final
