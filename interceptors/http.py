"""ASGI and WSGI middleware: an HTTP server in the mesh, as ``mesh.server()`` is for gRPC.

Per request, before the application runs: the caller's identity, the AccessPolicy
of the server's address (rules on paths; a denied request gets ``403`` with the
body ``permission denied``, the reason logged on ``meshlib.authz``), and the
TrafficPolicy's local rate limit per caller identity (``429`` with ``Retry-After``).
Around it: a ``SERVER`` span continuing the caller's W3C trace (the application
runs with it current, so calls it makes through meshlib are its children), the
golden metrics (``meshlib_server_*``, labelled by the HTTP method — paths are
unbounded) and, when MeshConfig turns them on, access-log lines.

An ASGI WebSocket is one such request: its handshake (a ``GET``, RFC 6455 §4.1) is
admitted or refused the same way before the application sees it, and it is counted
once, when the connection ends, with the code ``101`` once accepted. A refusal is the
same ``403``/``429`` response when the server offers ASGI's ``websocket.http.response``
extension (uvicorn, hypercorn), and otherwise (daphne) a ``websocket.close`` before
accept — code 1008 (policy violation) or 1013 (try again later) — which the server
answers with ``403``. Other scopes (``lifespan``) pass through untouched.

The server's address is the ``port`` (and ``host``) it listens on: the control
plane sends the rules for it as a server Listener, and they apply live.

Caller identity, in this order: the ASGI ``tls`` extension's client certificate
(servers that implement it), the WSGI ``SSL_CLIENT_CERT`` variable (Apache
mod_wsgi, and servers that copy it), or — only with ``trust_forwarded_identity`` —
the ``URI=`` of an ``x-forwarded-client-cert`` header set by a trusted proxy such as
the mesh's Envoy sidecar, taken only from a loopback peer (the proxy beside the app)
and parsed with Envoy's quoting. Anything else is a caller without identity.

Example::

    app = FastAPI()
    app.add_middleware(MeshASGIMiddleware, mesh=mesh, port=8000)

    flask_app.wsgi_app = MeshWSGIMiddleware(flask_app.wsgi_app, mesh=mesh, port=5000)
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from meshlib.contract import SpiffeId
from meshlib.contract.x509 import spiffe_id_of_pem
from meshlib.security import DENIED
from meshlib.telemetry import ServerCall, ServerObserver

if TYPE_CHECKING:
    from meshlib import Mesh

__all__ = ["MeshASGIMiddleware", "MeshWSGIMiddleware", "spiffe_id_of_pem"]

_DENIED = DENIED.encode()


def _xfcc_elements(value: str) -> list[dict[str, list[str]]]:
    """The elements of an ``x-forwarded-client-cert`` header, as Envoy writes it:
    elements split by ``,``, ``key=value`` pairs by ``;``; a value may be double-quoted
    (then ``,``, ``;`` and ``=`` inside it are literal, ``\\"`` an escaped quote)."""
    elements: list[dict[str, list[str]]] = [{}]
    key, buf, in_quotes, escaped, seen_key = "", [], False, False, False

    def end_pair() -> None:
        nonlocal key, buf, seen_key
        if seen_key or "".join(buf).strip():
            name = key.strip().lower() if seen_key else "".join(buf).strip().lower()
            text = "".join(buf) if seen_key else ""
            elements[-1].setdefault(name, []).append(text.strip())
        key, buf, seen_key = "", [], False

    for char in value:
        if escaped:
            buf.append(char)
            escaped = False
        elif in_quotes and char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif in_quotes:
            buf.append(char)
        elif char == "=" and not seen_key:
            key, buf, seen_key = "".join(buf), [], True
        elif char == ";":
            end_pair()
        elif char == ",":
            end_pair()
            elements.append({})
        else:
            buf.append(char)
    end_pair()
    return [element for element in elements if element]


def _xfcc_identity(value: str) -> str | None:
    """The SPIFFE ID in ``URI=`` of the last element of an ``x-forwarded-client-cert``
    header (the one the nearest proxy added); None unless there is exactly one."""
    elements = _xfcc_elements(value)
    uris = elements[-1].get("uri", []) if elements else []
    if len(uris) != 1:
        return None
    try:
        return SpiffeId.parse(uris[0]).uri
    except ValueError:
        return None


def _loopback(host: str | None) -> bool:
    """Whether a peer address is this machine's (the local sidecar proxy)."""
    try:
        return host is not None and ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Guard:
    """What both middlewares do around one request: the server address's admission
    (authorization, rate limit) and the request's telemetry."""

    def __init__(self, mesh: Mesh, port: int, host: str, service: str | None,
                 trust_forwarded_identity: bool) -> None:
        self.service = service or mesh.service
        self.policy, self.stop = mesh.server_policy(port, host)
        self.policy.ready.wait(mesh.resolve_timeout)
        self.trust_xfcc = trust_forwarded_identity
        self.observer = ServerObserver(mesh.metrics if mesh.settings.telemetry else None,
                                       self.service, "http", self.policy.observability)

    def refusal(self, principal: str | None, method: str, path: str,
                peer: str) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """None to go on, or the (status, headers, body) to answer with."""
        admission = self.policy.admission
        if not admission.authorize(principal, path, peer, what=f"{method} {path}"):
            return 403, [(b"content-type", b"text/plain")], _DENIED
        wait = admission.throttle(principal)
        if wait:
            return 429, [(b"content-type", b"text/plain"),
                         (b"retry-after", str(max(1, math.ceil(wait))).encode())], \
                f"rate limited: retry in {max(1, round(wait * 1000))} ms".encode()
        return None

    def begin(self, method: str, traceparent: str | None,
              headers: Callable[[], dict[str, str]]) -> ServerCall:
        return self.observer.begin(method, traceparent, headers, {
            "http.request.method": method, "meshlib.destination": self.service})

    @staticmethod
    def done(call: ServerCall, principal: str | None, method: str, path: str, status: int,
             request_bytes: int | None, response_bytes: int) -> None:
        call.end(method, str(status), status >= 500, principal,
                 request_bytes=request_bytes, response_bytes=response_bytes,
                 log_method=f"{method} {path}",
                 attributes={"http.response.status_code": status})


class MeshASGIMiddleware:
    """ASGI middleware (Starlette/FastAPI ``add_middleware``, or wrap any ASGI app).

    ``port``/``host``: where the server listens (its server Listener). ``service``:
    the metrics' ``destination_service`` (default: the Mesh's). HTTP and WebSocket
    scopes are guarded alike; others (``lifespan``) pass through.
    """

    def __init__(self, app: Any, *, mesh: Mesh, port: int, host: str = "0.0.0.0",
                 service: str | None = None, trust_forwarded_identity: bool = False) -> None:
        self.app = app
        self._guard = _Guard(mesh, port, host, service, trust_forwarded_identity)

    def _principal(self, scope: dict[str, Any]) -> str | None:
        tls = (scope.get("extensions") or {}).get("tls") or {}
        chain = tls.get("client_cert_chain") or ()
        if chain:
            return spiffe_id_of_pem(chain[0])
        client = scope.get("client") or (None,)
        if self._guard.trust_xfcc and _loopback(client[0]):  # only the local proxy's
            for key, value in scope.get("headers") or ():
                if key == b"x-forwarded-client-cert":
                    return _xfcc_identity(value.decode("latin-1"))
        return None

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any],
                       send: Callable[..., Any]) -> None:
        kind = scope.get("type")
        if kind != "http" and kind != "websocket":  # lifespan: not a request
            await self.app(scope, receive, send)
            return
        guard = self._guard
        # A WebSocket scope has no method: its handshake is a GET (RFC 6455 §4.1).
        method, path = scope.get("method", "GET"), scope.get("path", "/")
        principal = self._principal(scope)
        raw = scope.get("headers") or ()
        traceparent = next((v.decode("latin-1") for k, v in raw if k == b"traceparent"),
                           None)
        span = guard.begin(method, traceparent,
                           lambda: {k.decode("latin-1"): v.decode("latin-1")
                                    for k, v in raw})
        client = scope.get("client")
        refusal = guard.refusal(principal, method, path,
                                f"{client[0]}:{client[1]}" if client else "?")
        outcome = {"status": 0, "bytes": 0}
        request_bytes = 0

        async def counting_receive() -> Any:
            nonlocal request_bytes
            message = await receive()
            request_bytes += _payload_size(message)
            return message

        async def recording_send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "http.response.start" or kind == "websocket.http.response.start":
                outcome["status"] = message["status"]
            elif kind == "websocket.accept":
                outcome["status"] = 101
            elif kind == "websocket.close":
                if not outcome["status"]:  # closed before accept: the server answers 403
                    outcome["status"] = 403
            else:
                outcome["bytes"] += _payload_size(message)
            await send(message)

        try:
            if refusal is not None:
                await _refuse(scope, receive, recording_send, refusal)
                outcome["status"] = refusal[0]
            else:
                await self.app(scope, counting_receive, recording_send)
        finally:
            guard.done(span, principal, method, path, outcome["status"] or 500,
                       request_bytes, outcome["bytes"])


#: The close code of a refusal where the server cannot send it as a response.
_CLOSE_CODE = {403: 1008, 429: 1013}  # RFC 6455 §7.4.1: policy violation; try again later


def _payload_size(message: dict[str, Any]) -> int:
    """Bytes of an ASGI message's payload: HTTP ``body``, WebSocket ``bytes``/``text``."""
    data = message.get("body") or message.get("bytes")
    if data:
        return len(data)
    text = message.get("text")
    return len(text.encode()) if text else 0


async def _refuse(scope: dict[str, Any], receive: Callable[..., Any],
                  send: Callable[..., Any],
                  refusal: tuple[int, list[tuple[bytes, bytes]], bytes]) -> None:
    """Answer with ``refusal`` in place of the application: an HTTP response, or a
    WebSocket handshake refused before accept."""
    status, headers, body = refusal
    prefix = "http"
    if scope["type"] == "websocket":
        if (await receive())["type"] != "websocket.connect":
            return  # the client left first
        if "websocket.http.response" not in (scope.get("extensions") or {}):
            await send({"type": "websocket.close", "code": _CLOSE_CODE[status],
                        "reason": body.decode()})
            return
        prefix = "websocket.http"
    await send({"type": f"{prefix}.response.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}.response.body", "body": body})


class MeshWSGIMiddleware:
    """WSGI middleware (Flask: ``app.wsgi_app = MeshWSGIMiddleware(app.wsgi_app,
    mesh=mesh, port=5000)``); arguments as :class:`MeshASGIMiddleware`."""

    def __init__(self, app: Callable[..., Iterable[bytes]], *, mesh: Mesh, port: int,
                 host: str = "0.0.0.0", service: str | None = None,
                 trust_forwarded_identity: bool = False) -> None:
        self.app = app
        self._guard = _Guard(mesh, port, host, service, trust_forwarded_identity)

    def _principal(self, environ: dict[str, Any]) -> str | None:
        pem = environ.get("SSL_CLIENT_CERT")
        if pem:
            return spiffe_id_of_pem(pem)
        if self._guard.trust_xfcc and environ.get("HTTP_X_FORWARDED_CLIENT_CERT") \
                and _loopback(environ.get("REMOTE_ADDR")):  # only the local proxy's
            return _xfcc_identity(environ["HTTP_X_FORWARDED_CLIENT_CERT"])
        return None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterator[bytes]:
        guard = self._guard
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        principal = self._principal(environ)
        span = guard.begin(method, environ.get("HTTP_TRACEPARENT"), lambda: {
            k[5:].lower().replace("_", "-"): v for k, v in environ.items()
            if k.startswith("HTTP_") and isinstance(v, str)})
        size = environ.get("CONTENT_LENGTH") or ""
        request_bytes = int(size) if size.isdigit() else None
        refusal = guard.refusal(principal, method, path,
                                f"{environ.get('REMOTE_ADDR', '?')}:"
                                f"{environ.get('REMOTE_PORT', '?')}")
        status = [500]
        sent = 0
        try:
            if refusal is not None:
                code, headers, body = refusal
                status[0] = code
                reason = {403: "Forbidden", 429: "Too Many Requests"}[code]
                start_response(f"{code} {reason}",
                               [(k.decode(), v.decode()) for k, v in headers])
                sent = len(body)
                yield body
                return

            def recording_start(line: str, headers: Any, exc_info: Any = None) -> Any:
                status[0] = int(line.split(" ", 1)[0])
                return start_response(line, headers, exc_info) if exc_info is not None \
                    else start_response(line, headers)

            result = self.app(environ, recording_start)
            try:
                for chunk in result:
                    sent += len(chunk)
                    yield chunk
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        finally:
            guard.done(span, principal, method, path, status[0], request_bytes, sent)
