"""Request builders and raw ADS client streams (grpc.aio stubs) for server tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from xds_server.cache import SnapshotCache
from xds_server.server import AdsServer, CallbackFuncs

__all__ = [
    "AdsEnv",
    "DeltaClient",
    "Recorder",
    "SotwClient",
    "delta_req",
    "nack_status",
    "sotw_req",
]


def nack_status(message: str = "bad resource") -> status_pb2.Status:
    return status_pb2.Status(code=3, message=message)


def sotw_req(
    type_url: str,
    names: Iterable[str] = (),
    *,
    nonce: str = "",
    version: str = "",
    node: base_pb2.Node | None = None,
    error: str | None = None,
) -> discovery_pb2.DiscoveryRequest:
    request = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=list(names), response_nonce=nonce,
        version_info=version)
    if node is not None:
        request.node.CopyFrom(node)
    if error is not None:
        request.error_detail.CopyFrom(nack_status(error))
    return request


def delta_req(
    type_url: str,
    subscribe: Iterable[str] = (),
    unsubscribe: Iterable[str] = (),
    *,
    nonce: str = "",
    node: base_pb2.Node | None = None,
    initial: Mapping[str, str] | None = None,
    error: str | None = None,
) -> discovery_pb2.DeltaDiscoveryRequest:
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url, resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe), response_nonce=nonce,
        initial_resource_versions=dict(initial or {}))
    if node is not None:
        request.node.CopyFrom(node)
    if error is not None:
        request.error_detail.CopyFrom(nack_status(error))
    return request


class _Client:
    """One ADS call; a read left pending by :meth:`expect_silence` is reused."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self._pending: asyncio.Future[Any] | None = None

    async def send(self, request: Any) -> None:
        await self.call.write(request)

    def _read(self) -> asyncio.Future[Any]:
        read, self._pending = self._pending, None
        return read if read is not None else asyncio.ensure_future(self.call.read())

    async def recv(self, timeout: float = 3.0) -> Any:
        read = self._read()
        done, _ = await asyncio.wait({read}, timeout=timeout)
        if not done:
            self._pending = read
            raise TimeoutError("no response")
        response = read.result()
        assert response is not grpc.aio.EOF, "stream ended"
        return response

    async def expect_silence(self, timeout: float = 0.3) -> None:
        """Assert that nothing arrives for ``timeout`` seconds (the stream stays usable)."""
        read = self._read()
        done, _ = await asyncio.wait({read}, timeout=timeout)
        if done:
            raise AssertionError(f"unexpected response: {read.result()}")
        self._pending = read

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        self.call.cancel()


class SotwClient(_Client):
    """A raw state-of-the-world ADS stream: ``send``/``recv`` DiscoveryRequest/Response."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        super().__init__(stub.StreamAggregatedResources())


class DeltaClient(_Client):
    """A raw incremental ADS stream."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        super().__init__(stub.DeltaAggregatedResources())


@dataclass
class Recorder:
    """Every callback, as ``(hook name, args)``."""

    events: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def callbacks(self) -> CallbackFuncs:
        def hook(name: str) -> Any:
            def record(*args: Any) -> None:
                self.events.append((name, args))
                if name in self.extra:
                    self.extra[name](*args)
            return record

        names = [f.name for f in CallbackFuncs.__dataclass_fields__.values()]
        return CallbackFuncs(**{n: hook(n) for n in names})

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.events if n == name]


@dataclass
class AdsEnv:
    cache: SnapshotCache
    ads: AdsServer
    server: grpc.aio.Server
    port: int
    channel: grpc.aio.Channel
    recorder: Recorder
