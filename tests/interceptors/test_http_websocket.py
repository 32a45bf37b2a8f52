"""WebSockets behind MeshASGIMiddleware: the handshake gets the AccessPolicy, the rate
limit and the telemetry of an HTTP request, before the application sees it.

A real uvicorn serves a Starlette app (through the pytest plugin's
``mesh_service.http``), and the ``websockets`` client connects to it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from interceptors.http import MeshASGIMiddleware
from meshlib.testing import config as c


class Chat:
    """An echo WebSocket app that remembers which connections reached it."""

    def __init__(self) -> None:
        self.reached: list[str] = []
        self.app = Starlette(routes=[WebSocketRoute("/{path:path}", self.echo)])

    async def echo(self, websocket: WebSocket) -> None:
        self.reached.append(websocket.url.path)
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(f"echo {text}")


def url(service: Any, path: str) -> str:
    return f"ws://127.0.0.1:{service.replicas[0].port}{path}"


def refused(service: Any, path: str) -> Any:
    """The HTTP response that refused the handshake."""
    with pytest.raises(InvalidStatus) as err, connect(url(service, path), open_timeout=5):
        pass
    return err.value.response


def eventually(read: Any, timeout: float = 5.0) -> Any:
    """``read()`` once it is not None: the server records a connection after it ends."""
    deadline = time.monotonic() + timeout
    while (value := read()) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


@pytest.fixture
def chat(mesh_control_plane: Any, mesh_service: Any) -> tuple[Chat, Any]:
    app = Chat()
    return app, mesh_service.http("chat", app.app)


def test_a_denied_path_is_refused_before_the_app_accepts(mesh_control_plane, chat):
    app, service = chat
    mesh_control_plane.apply(c.access_policy("chat", c.deny(paths=["/admin/*"]), c.allow()))
    mesh_control_plane.wait_synced()

    response = refused(service, "/admin/feed")
    assert (response.status_code, response.body) == (403, b"permission denied")
    assert app.reached == []  # the handler never ran

    with connect(url(service, "/rooms/1"), open_timeout=5) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "echo hello"
    assert app.reached == ["/rooms/1"]


def test_the_rate_limit_applies_to_handshakes(mesh_control_plane, chat):
    app, service = chat
    mesh_control_plane.apply(c.traffic_policy(
        "chat", rateLimit={"requestsPerSecond": 0.5, "burst": 2}))
    mesh_control_plane.wait_synced()

    for _ in range(2):
        with connect(url(service, "/rooms/1"), open_timeout=5) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "echo hi"
    response = refused(service, "/rooms/1")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"  # one token per 2 s
    assert response.body.startswith(b"rate limited: retry in")
    assert len(app.reached) == 2


def test_a_connection_is_one_call_in_metrics_and_access_logs(mesh_control_plane, chat,
                                                               capsys):
    _, service = chat
    mesh_control_plane.apply(c.mesh_config(accessLogs={"enabled": True}),
                             c.access_policy("chat", c.deny(paths=["/admin/*"]), c.allow()))
    mesh_control_plane.wait_synced()
    with connect(url(service, "/rooms/7"), open_timeout=5) as ws:
        for text in ("a", "bc"):
            ws.send(text)
            ws.recv(timeout=5)
        time.sleep(0.2)  # the connection's lifetime is its duration
    refused(service, "/admin/feed")

    # the server writes a connection's log line last, after its metrics
    out: list[str] = []

    def logged() -> Any:
        out.extend(capsys.readouterr().out.splitlines())
        lines = [json.loads(text) for text in out if text.startswith('{"time"')]
        return lines if len(lines) >= 2 else None
    lines = sorted(eventually(logged), key=lambda line: line["code"])
    served = [(line["kind"], line["method"], line["code"]) for line in lines]
    assert served == [("server", "GET /rooms/7", "101"), ("server", "GET /admin/feed", "403")]
    assert lines[0]["duration_ms"] >= 200 and lines[0]["protocol"] == "http"
    assert (lines[0]["request_bytes"], lines[0]["response_bytes"]) == (3, 13)

    registry = service.mesh.metrics.registry
    labels = {"destination_service": "chat", "method": "GET"}
    for code in ("101", "403"):
        assert registry.get_sample_value("meshlib_server_requests_total", {
            **labels, "code": code, "source_identity": "unknown"}) == 1
    duration = registry.get_sample_value("meshlib_server_request_duration_seconds_sum",
                                         {**labels, "code": "101"})
    assert duration >= 0.2
    assert registry.get_sample_value("meshlib_server_request_bytes_total", labels) == 3
    # "echo a" + "echo bc", and the refusal's "permission denied"
    assert registry.get_sample_value("meshlib_server_response_bytes_total", labels) == \
        6 + 7 + len("permission denied")


def test_without_the_response_extension_a_refusal_is_a_close_before_accept(
        mesh_control_plane, chat):
    """A server that cannot send an HTTP response from the app gets ``websocket.close``:
    1008 (policy violation) for authorization, 1013 (try again later) for the rate
    limit. Other scopes (lifespan) reach the app untouched."""
    _, service = chat
    mesh_control_plane.apply(
        c.access_policy("chat", c.deny(paths=["/admin/*"]), c.allow()),
        c.traffic_policy("chat", rateLimit={"requestsPerSecond": 0.001, "burst": 1}))
    mesh_control_plane.wait_synced()
    seen: list[tuple[str, Any, Any]] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((scope["type"], receive, send))

    middleware = MeshASGIMiddleware(inner, mesh=service.mesh,
                                    port=service.replicas[0].port, host="127.0.0.1")

    async def handshake(path: str) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
        await middleware({"type": "websocket", "path": path, "headers": [],
                          "client": ("127.0.0.1", 40000)}, receive, send)
        return sent

    async def lifespan_receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def lifespan_send(message: dict[str, Any]) -> None:
        pass

    async def run() -> list[list[dict[str, Any]]]:
        await middleware({"type": "lifespan"}, lifespan_receive, lifespan_send)
        return [await handshake("/admin/feed"), await handshake("/rooms/1"),
                await handshake("/rooms/1")]

    denied, first, limited = asyncio.run(run())
    assert denied == [{"type": "websocket.close", "code": 1008,
                       "reason": "permission denied"}]
    assert first == []  # admitted: the app had it (and did nothing)
    assert limited[0]["code"] == 1013
    assert limited[0]["reason"].startswith("rate limited: retry in")
    assert seen[0] == ("lifespan", lifespan_receive, lifespan_send)
    assert [kind for kind, _, _ in seen] == ["lifespan", "websocket"]
