"""``Mesh.server()`` (and ``serve_metrics``) never share a busy port: they raise
:class:`meshlib.BindError` naming the address."""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

import meshlib
from meshlib._server_bind import Front, build_server


@pytest.fixture
def grpc_port() -> Iterator[int]:
    """A port served by a first gRPC server with grpc's defaults (SO_REUSEPORT on)."""
    first = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = first.add_insecure_port("127.0.0.1:0")
    first.start()
    yield port
    first.stop(None)


@pytest.fixture
def mesh() -> Iterator[meshlib.Mesh]:
    with meshlib.Mesh(xds_address="127.0.0.1:1", resolve_timeout=0.1) as mesh:
        yield mesh


@pytest.mark.parametrize("holder", ["held_port", "grpc_port"])
@pytest.mark.parametrize("aio", [False, True])
def test_mesh_server_refuses_a_busy_port(request, mesh, holder, aio):
    port = request.getfixturevalue(holder)
    make = mesh.aio_server if aio else mesh.server
    with pytest.raises(meshlib.BindError) as caught:
        make("reviews", port, host="127.0.0.1", mtls="DISABLE")
    err = caught.value
    assert isinstance(err, meshlib.MeshError) and isinstance(err, OSError)
    assert str(err) == f"cannot serve reviews on 127.0.0.1:{port}: address already in use"
    assert err.address == f"127.0.0.1:{port}" and err.errno == errno.EADDRINUSE


def test_grpc_itself_refuses_to_share_the_port(monkeypatch, grpc_port):
    """Without the up-front check, gRPC's bind fails too (NO_REUSEPORT), and the
    RuntimeError grpcio raises becomes a BindError naming the address."""
    monkeypatch.setattr("meshlib._server_bind.check_free", lambda *a, **k: None)
    with pytest.raises(meshlib.BindError, match=f"cannot serve gRPC on 127.0.0.1:{grpc_port}"):
        build_server(mode="DISABLE", source=None, host="127.0.0.1", port=grpc_port,
                     interceptors=(), aio=False, options=(), max_workers=1, loop=None)


def test_the_permissive_front_refuses_a_busy_port(held_port):
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        front = Front("127.0.0.1", held_port, tls_port=1, plain_port=2, loop=loop,
                      what="serve reviews")
        with pytest.raises(meshlib.BindError,
                           match=f"cannot serve reviews on 127.0.0.1:{held_port}: address "
                                 "already in use"):
            front.start()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_a_free_port_still_serves(mesh):
    server = mesh.server("reviews", 0, host="127.0.0.1", mtls="DISABLE")
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=2):
            pass
    finally:
        server.stop(None)


def test_serve_metrics_refuses_a_busy_port_naming_it(mesh, held_port):
    with pytest.raises(meshlib.BindError) as caught:
        mesh.serve_metrics(held_port, "127.0.0.1")
    assert str(caught.value) == (
        f"cannot serve metrics on 127.0.0.1:{held_port}: address already in use")
