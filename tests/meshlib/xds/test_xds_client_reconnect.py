"""XdsClient against the real control plane, in-process over loopback: reconnect with
cached values, late watchers, the does-not-exist timer."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from meshlib.xds import (
    LISTENER,
    ROUTE,
    Backoff,
    ListenerUpdate,
    RouteConfigUpdate,
    XdsClient,
    XdsClientConfig,
)
from tests.meshlib.xds.xds_models import RDS, canary_model
from tests.meshlib.xds.xds_watchers import Recorder, wait_for
from xds_server.control_plane import ControlPlane
from xds_server.model import MeshModel
from xds_server.server import serve

# gRPC's own reconnect backoff (1 s at first) would otherwise dominate the test.
FAST_CHANNEL = (("grpc.initial_reconnect_backoff_ms", 50),
                ("grpc.min_reconnect_backoff_ms", 50),
                ("grpc.max_reconnect_backoff_ms", 200))
FAST_BACKOFF = Backoff(base=0.05, cap=0.2, random=lambda: 0.5)


async def _start(model: MeshModel, port: int = 0) -> tuple[grpc.aio.Server, int]:
    cp = ControlPlane(model)
    return await serve(("127.0.0.1", port), cp.cache, cp.callbacks())


async def _stop(server: grpc.aio.Server) -> None:
    with contextlib.suppress(Exception):
        await server.stop(grace=None)


def _client(port: int, *, resource_timeout: float = 15.0) -> XdsClient:
    config = XdsClientConfig(server_address=f"127.0.0.1:{port}", node_id="meshlib-1",
                             resource_timeout=resource_timeout, channel_options=FAST_CHANNEL)
    return XdsClient(config, backoff=FAST_BACKOFF)


def _timeout(update: RouteConfigUpdate) -> float | None:
    route = update.virtual_hosts[0].routes[-1]
    assert route.action is not None
    return route.action.timeout


def _slower_canary() -> MeshModel:
    """The canary model with the catch-all rule's timeout 2.5 s → 7 s."""
    model = canary_model()
    (route,) = model.routes
    rules = (*route.rules[:-1], dataclasses.replace(route.rules[-1], timeout=7.0))
    return dataclasses.replace(model, routes=(dataclasses.replace(route, rules=rules),))


@pytest.fixture
async def server() -> AsyncIterator[tuple[grpc.aio.Server, int]]:
    server, port = await _start(canary_model())
    yield server, port
    await _stop(server)


async def test_reconnects_and_keeps_cached_values_while_down(server):
    first, port = server
    lds, rds = Recorder(), Recorder()
    async with _client(port) as client:
        client.watch(LISTENER, "reviews", lds)
        client.watch(ROUTE, RDS, rds)
        await wait_for(lambda: lds.changed and rds.changed)
        listener = lds.changed[0]
        assert isinstance(listener, ListenerUpdate)
        assert listener.route_config_name == RDS
        assert _timeout(rds.changed[0]) == 2.5

        await _stop(first)
        await wait_for(lambda: lds.ambient and rds.ambient)
        assert "ADS stream" in str(lds.ambient[0])
        assert client.cached(LISTENER, "reviews") == listener  # still serving
        assert client.cached(ROUTE, RDS) == rds.changed[0]
        assert not lds.removed and not rds.removed and not lds.errors

        second, _ = await _start(_slower_canary(), port)
        try:
            await wait_for(lambda: len(rds.changed) == 2, timeout=8)
            assert _timeout(rds.changed[1]) == 7.0
            assert client.cached(ROUTE, RDS) == rds.changed[1]
            assert lds.changed == [listener]  # unchanged: not delivered again
            assert len(lds.ambient) == 1  # one outage, one ambient error
            assert lds.log == ["changed", "ambient"]
        finally:
            await _stop(second)


async def test_late_watcher_gets_the_cached_value_at_once(server):
    _, port = server
    early, late = Recorder(), Recorder()
    async with _client(port) as client:
        cancel_early = client.watch(LISTENER, "reviews", early)
        await wait_for(lambda: early.changed)
        cancel_late = client.watch(LISTENER, "reviews", late)
        assert late.changed == early.changed  # before watch() returned
        cancel_early()
        assert client.subscriptions(LISTENER) == {"reviews"}
        cancel_late()
        assert client.subscriptions(LISTENER) == frozenset()
        assert client.cached(LISTENER, "reviews") is None  # forgotten on unsubscribe


async def test_unknown_name_is_reported_removed_by_the_does_not_exist_timer(server):
    """RDS responses may omit names, so only the timer tells a missing route apart."""
    _, port = server
    missing, present, cancelled = Recorder(), Recorder(), Recorder()
    async with _client(port, resource_timeout=0.3) as client:
        started = time.monotonic()
        client.watch(ROUTE, "no-such-route", missing)
        client.watch(ROUTE, RDS, present)
        client.watch(ROUTE, "also-missing", cancelled)()  # cancelled: its timer too
        await wait_for(lambda: missing.removed)
        assert time.monotonic() - started >= 0.3
        assert missing.log == ["removed"]
        assert present.log == ["changed"]
        assert cancelled.log == []
        late = Recorder()
        client.watch(ROUTE, "no-such-route", late)
        assert late.log == ["removed"]  # the known absence, at once


async def test_listener_the_server_reports_not_found_is_removed_at_once(server):
    _, port = server
    missing = Recorder()
    async with _client(port) as client:  # the 15 s timer is not what fires here
        client.watch(LISTENER, "no-such-service", missing)
        await wait_for(lambda: missing.removed, timeout=2)
        assert missing.log == ["removed"]
