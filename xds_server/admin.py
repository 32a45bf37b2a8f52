"""The admin HTTP endpoint: ``/healthz``, ``/readyz``, ``/metrics``, ``/debug/config_dump``.

A small stdlib HTTP server on its own thread, so a busy event loop never delays a
scrape or a probe. Handlers only read immutable snapshots and thread-safe metrics.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from meshlib.contract import BindError
from meshlib.contract.listen import address_of

__all__ = ["AdminServer", "AdminViews"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminViews:
    """What the admin server shows; each callable must be safe from any thread."""

    ready: Callable[[], tuple[bool, str]]
    metrics: Callable[[], bytes]
    config_dump: Callable[[str | None], dict[str, Any] | None]


class AdminServer:
    """Serves the admin endpoints on ``host:port`` (port 0 picks a free one).

    A busy port raises :class:`~meshlib.contract.BindError` naming the address (the
    socket gets ``SO_REUSEADDR`` only, never ``SO_REUSEPORT``: no shared port).
    """

    def __init__(self, address: tuple[str, int], views: AdminViews) -> None:
        handler = _make_handler(views)
        server_class = _IPv6Server if ":" in address[0] else ThreadingHTTPServer
        try:
            self._httpd = server_class(address, handler)
        except OSError as err:
            raise BindError.from_os_error(address_of(*address), err,
                                          what="serve admin") from None
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="meshctl-admin", daemon=True
        )

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _make_handler(views: AdminViews) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                self._get()
            except Exception as exc:  # e.g. the event loop too busy to answer in time
                log.warning("admin %s failed: %r", self.path, exc)
                self._send(503, f"unavailable: {exc!r}\n".encode())

        def _get(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/healthz":
                self._send(200, b"ok\n")
            elif url.path == "/readyz":
                ok, why = views.ready()
                self._send(200 if ok else 503, (why or "ok").encode() + b"\n")
            elif url.path == "/metrics":
                self._send(200, views.metrics(), CONTENT_TYPE_LATEST)
            elif url.path == "/debug/config_dump":
                node = parse_qs(url.query).get("node", [None])[0]
                dump = views.config_dump(node)
                if dump is None:
                    self._send(404, f"no connected node {node!r}\n".encode())
                else:
                    body = json.dumps(dump, indent=2, sort_keys=True).encode()
                    self._send(200, body, "application/json")
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("admin: " + format, *args)

    return Handler
