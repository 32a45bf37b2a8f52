"""Fixtures: real gRPC servers on loopback, sync and grpc.aio. Every server started
here is stopped at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from tests.interceptors.interceptor_backend import Backend


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """Start a sync server: ``serve(handler, interceptors=(), workers=4) -> address``."""
    servers: list[grpc.Server] = []

    def start(handler: grpc.GenericRpcHandler, interceptors: tuple[Any, ...] = (),
              workers: int = 4) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                             interceptors=interceptors)
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0).wait()


@pytest.fixture
def backend(serve: Callable[..., str]) -> tuple[Backend, str]:
    """A sync backend server and its address."""
    backend = Backend()
    return backend, serve(backend.handler())


@pytest.fixture
async def aio_serve() -> AsyncIterator[Callable[..., Any]]:
    """Start a grpc.aio server: ``await aio_serve(handler, interceptors=()) -> address``."""
    servers: list[grpc.aio.Server] = []

    async def start(handler: grpc.GenericRpcHandler,
                    interceptors: tuple[Any, ...] = ()) -> str:
        server = grpc.aio.server(interceptors=interceptors)
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop(0)
