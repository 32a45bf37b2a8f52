"""HTTP/1.1 for the fake: a threading server whose handler turns requests into
:class:`Request` s for the :class:`Api`, and streams watches as the real server does:
``200``, ``Transfer-Encoding: chunked``, one JSON event per line, bookmarks when asked,
the stream ended at ``timeoutSeconds``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.kube._api import Api
from tests.kube._messages import Request, Response, WatchPlan
from tests.kube._resources import ResourceType
from tests.kube._store import Watcher
from tests.kube._table import table

__all__ = ["HttpServer"]

log = logging.getLogger(__name__)


class HttpServer(ThreadingHTTPServer):
    """The listening socket, its handler threads, and the open connections (so a
    stop, or an abrupt watch drop, can cut them)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    block_on_close = False

    def __init__(self, address: tuple[str, int], api: Api, *, bookmark_interval: float) -> None:
        self.api = api
        self.bookmark_interval = bookmark_interval
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def cut_connections(self) -> None:
        with self.conn_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def _encode_event(rt: ResourceType, kind: str, payload: Any, *, as_table: bool = False,
                  columns_too: bool = False) -> bytes:
    if kind == "BOOKMARK":
        rv, initial_end = payload
        meta: dict[str, Any] = {"resourceVersion": str(rv), "creationTimestamp": None}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}
    elif kind == "ERROR":
        obj = payload
    else:
        obj = payload if payload.get("apiVersion") == rt.api_version else {
            **payload, "apiVersion": rt.api_version}
        if as_table:
            obj = table(rt, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]},
                        columns_too=columns_too)
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HttpServer
    server_version = "meshlib-fake-apiserver"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm
        # and the client's delayed ACK add 40 ms to every request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.conn_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.conn_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        url = urlsplit(self.path)
        req = Request(method=self.command, path=url.path,
                      query=dict(parse_qsl(url.query, keep_blank_values=True)),
                      headers={k.lower(): v for k, v in self.headers.items()},
                      body=self._read_body())
        try:
            result = self.server.api.handle(req)
        except Exception:  # a bug of the fake: answer 500 as a real server would
            log.exception("fake apiserver: %s %s", self.command, self.path)
            result = Response(500, json.dumps({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": "InternalError", "code": 500,
                "message": "fake apiserver bug; see the test log"}).encode())
        if isinstance(result, WatchPlan):
            self._stream(result)
        else:
            self._respond(result)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def _respond(self, resp: Response) -> None:
        self.send_response(resp.code)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("Audit-Id", "fake")
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _stream(self, plan: WatchPlan) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()
        w = plan.watcher
        try:
            if w is None:
                self._chunk(_encode_event(plan.rt, "ERROR", plan.error))
            else:
                abrupt = self._pump(plan, w)
                if abrupt:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the client went away
            self.close_connection = True
        finally:
            if w is not None:
                self.server.api.store.unwatch(w)

    def _pump(self, plan: WatchPlan, w: Watcher) -> bool:
        """Send events until the watch ends; True if it must end abruptly."""
        store = self.server.api.store
        interval = self.server.bookmark_interval
        next_bookmark = time.monotonic() + interval
        final_bookmark = w.bookmarks
        first = True
        while True:
            with w.cond:
                now = time.monotonic()
                wake = min(plan.deadline, next_bookmark if w.bookmarks else plan.deadline)
                if not w.queue and w.closed is None and now < wake:
                    w.cond.wait(wake - now)
                items = list(w.queue)
                w.queue.clear()
                closed = w.closed
            for kind, payload in items:
                self._chunk(_encode_event(plan.rt, kind, payload, as_table=plan.as_table,
                                          columns_too=first))
                first = first and kind in ("BOOKMARK", "ERROR")
            if items:
                self.wfile.flush()
            if closed is not None:
                return closed in ("abrupt", "stopped")
            now = time.monotonic()
            if now >= plan.deadline:
                if final_bookmark and store.bookmark(w):
                    final_bookmark = False
                    continue  # send it, then end
                return False
            if w.bookmarks and now >= next_bookmark:
                store.bookmark(w)
                next_bookmark = now + interval
