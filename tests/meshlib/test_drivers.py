"""The four drivers of the call pipeline — grpc sync, grpc aio, httpx sync, httpx
async — with the endpoint call stubbed (no sockets): each retries as the route says,
sleeps with the Mesh's injected ``sleep`` (awaited on the asyncio paths), and ends a
call the same way."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest

from meshlib._aio_channel import AioMeshChannel
from meshlib._channel import MeshChannel
from meshlib._http import AsyncMeshTransport, MeshTransport
from meshlib._pool import CallableTracker
from meshlib._resolver import Target
from meshlib._settings import MeshSettings
from meshlib.errors import CallError, RetryExhaustedError
from meshlib.resilience import async_sleep
from meshlib.xds import FaultConfig
from meshlib.xds import RetryPolicy as XdsRetryPolicy
from tests.meshlib.test_pipeline import world

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
METHOD = "/demo.Reviews/Get"
RETRY = XdsRetryPolicy(retry_on=frozenset({UNAVAILABLE}), num_retries=2,
                       base_interval=0.05, max_interval=0.5)


def clients(sleeps: list[float], **world_options: Any) -> tuple[Any, Target]:
    """A Clients stand-in and a resolved target; ``sleeps`` records every wait."""
    table, _, clock = world(**world_options)
    target = Target("reviews")
    target.settle("ready", table)
    settings = MeshSettings(xds_address="x:1", sleep=sleeps.append, clock=clock)
    stand_in = types.SimpleNamespace(
        settings=settings, telemetry=None, tracker=CallableTracker(),
        async_sleep=async_sleep(settings.sleep), certificates=None,
        target=lambda name: target)
    return stand_in, target


class Endpoint:
    """An endpoint multicallable failing UNAVAILABLE ``failures`` times, then OK."""

    def __init__(self, failures: int, aio: bool = False) -> None:
        self.failures = failures
        self.calls: list[dict] = []
        self.aio = aio

    def __call__(self, request: bytes, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        if self.aio:
            return self._answer()
        if len(self.calls) <= self.failures:
            raise CallError("down", code=UNAVAILABLE)
        return b"ok"

    async def _answer(self) -> bytes:
        if len(self.calls) <= self.failures:
            raise CallError("down", code=UNAVAILABLE)
        return b"ok"


def stubbed(multicallable: Any, endpoint: Endpoint) -> Any:
    cls = type(multicallable)
    multicallable.__class__ = type("Stubbed", (cls,), {
        "__slots__": (), "_callable": lambda self, e: endpoint})
    return multicallable


def test_sync_channel_retries_with_the_injected_sleep():
    sleeps: list[float] = []
    stand_in, target = clients(sleeps, retry=RETRY)
    endpoint = Endpoint(failures=2)
    call = stubbed(MeshChannel(target, stand_in).unary_unary(METHOD), endpoint)
    assert call(b"x", timeout=5) == b"ok"
    assert len(endpoint.calls) == 3 and len(sleeps) == 2  # no real sleeping
    assert all(0 <= s <= 0.5 for s in sleeps)


def test_sync_channel_out_of_attempts_raises_retry_exhausted():
    sleeps: list[float] = []
    stand_in, target = clients(sleeps, retry=RETRY)
    call = stubbed(MeshChannel(target, stand_in).unary_unary(METHOD), Endpoint(failures=9))
    with pytest.raises(RetryExhaustedError) as info:
        call(b"x", timeout=5)
    assert info.value.code() == UNAVAILABLE and info.value.attempts == 3


def test_aio_channel_awaits_the_injected_sleep():
    sleeps: list[float] = []
    stand_in, target = clients(sleeps, retry=RETRY)
    endpoint = Endpoint(failures=1, aio=True)

    async def run() -> bytes:
        call = stubbed(AioMeshChannel(target, stand_in).unary_unary(METHOD), endpoint)
        return await call(b"x", timeout=5)

    assert asyncio.run(run()) == b"ok"
    assert len(endpoint.calls) == 2 and len(sleeps) == 1


def test_a_fault_delay_is_slept_with_the_injected_sleep_too():
    sleeps: list[float] = []
    fault = FaultConfig(delay=0.25, delay_percent=100)
    stand_in, target = clients(sleeps, fault=fault)
    call = stubbed(MeshChannel(target, stand_in).unary_unary(METHOD), Endpoint(failures=0))
    started = time.monotonic()
    assert call(b"x", timeout=5) == b"ok"
    assert sleeps == [0.25] and time.monotonic() - started < 0.2


class Upstream:
    """What the httpx transports send attempts to: ``statuses`` in turn."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.urls: list[str] = []

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        return httpx.Response(self.statuses[len(self.urls) - 1], request=request)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.answer(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self.answer(request)


def transport(kind: Callable[..., Any], sleeps: list[float], upstream: Upstream) -> Any:
    stand_in, _ = clients(sleeps, retry=RETRY)
    made = kind(stand_in)
    made._transport_for = lambda tls: upstream
    return made


def test_http_sync_transport_retries_a_503_with_the_injected_sleep():
    sleeps: list[float] = []
    upstream = Upstream([503, 200])
    with httpx.Client(transport=transport(MeshTransport, sleeps, upstream)) as client:
        response = client.get("http://reviews/items/1")
    assert response.status_code == 200
    assert len(upstream.urls) == 2 and len(sleeps) == 1
    assert upstream.urls[0].startswith("http://10.0.0.1")  # sent to an endpoint


def test_http_async_transport_returns_the_last_response_when_retries_run_out():
    sleeps: list[float] = []
    upstream = Upstream([503, 503, 503])

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(
                transport=transport(AsyncMeshTransport, sleeps, upstream)) as client:
            return await client.get("http://reviews/items/1")

    assert asyncio.run(run()).status_code == 503  # as a plain client would see it
    assert len(upstream.urls) == 3 and len(sleeps) == 2


def test_http_post_is_not_retried():
    sleeps: list[float] = []
    upstream = Upstream([503, 200])
    with httpx.Client(transport=transport(MeshTransport, sleeps, upstream)) as client:
        assert client.post("http://reviews/items", content=b"{}").status_code == 503
    assert len(upstream.urls) == 1 and sleeps == []
