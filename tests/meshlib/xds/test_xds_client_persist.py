"""XdsClient with ``cache_path``: the last good config survives the process, and a new
process starts from it with the control plane down, then follows the control plane."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import pytest

from meshlib.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, ClusterUpdate, XdsClient
from meshlib.xds._persist import read_cache
from tests.meshlib.xds.xds_cp import (
    NODE_ID,
    catch_all_timeout,
    client,
    ratings_only,
    slower_canary,
    start,
    stop,
)
from tests.meshlib.xds.xds_models import RDS, V1, V2, canary_model
from tests.meshlib.xds.xds_watchers import Recorder, wait_for

PROTOCOLS = ["delta", "sotw"]


def _watch_all(xds: XdsClient, recorders: dict[tuple[str, str], Recorder],
               eds_names: list[str]) -> None:
    names = [(LISTENER, "reviews"), (ROUTE, RDS), (CLUSTER, V1), (CLUSTER, V2),
             *((ENDPOINT, n) for n in eds_names)]
    for key in names:
        xds.watch(*key, recorders.setdefault(key, Recorder()))


async def _fill_cache(port: int, path: Path, protocol: str) -> dict[tuple[str, str], object]:
    """Client A: get LDS/RDS/CDS/EDS from the control plane, then close."""
    recorders: dict[tuple[str, str], Recorder] = {}
    async with client(port, protocol=protocol, cache_path=str(path)) as a:
        _watch_all(a, recorders, [])
        await wait_for(lambda: all(r.changed for r in recorders.values()))
        clusters = [r.changed[0] for (t, _), r in recorders.items() if t == CLUSTER]
        _watch_all(a, recorders, [c.eds_service_name for c in clusters
                                  if isinstance(c, ClusterUpdate)])
        await wait_for(lambda: all(r.changed for r in recorders.values()))
    return {key: r.changed[-1] for key, r in recorders.items()}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_new_process_starts_from_the_cache_with_the_control_plane_down(
        tmp_path, protocol):
    path = tmp_path / "xds" / "cache.json"
    _, first, port = await start(canary_model())
    try:
        values = await _fill_cache(port, path, protocol)
    finally:
        await stop(first)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    saved = read_cache(path, namespace="default")
    assert saved is not None and len(saved) == len(values) == 6

    # B: nothing listens on the port. Watchers get the saved values at once.
    early = Recorder()
    b = client(port, protocol=protocol, cache_path=str(path))
    b.watch(LISTENER, "reviews", early)  # before start(): delivered by start()
    recorders: dict[tuple[str, str], Recorder] = {}
    b.start()
    try:
        assert early.changed == [values[(LISTENER, "reviews")]]
        _watch_all(b, recorders, [n for t, n in values if t == ENDPOINT])
        assert {key: r.changed for key, r in recorders.items()} == {
            key: [value] for key, value in values.items()}
        assert not b.connected.is_set()
        await wait_for(lambda: early.ambient)  # the outage: ambient, the values stay
        assert not early.errors and not early.removed
        assert b.cached(ROUTE, RDS) == values[(ROUTE, RDS)]

        # The control plane comes back with a change: B follows it.
        _, second, _ = await start(slower_canary(), port)
        try:
            rds = recorders[(ROUTE, RDS)]
            await wait_for(lambda: len(rds.changed) == 2, timeout=8)
            assert catch_all_timeout(rds.changed[1]) == 7.0
            assert b.connected.is_set()
            assert early.log == ["changed", "ambient"]  # not delivered again
            # The restored versions went on the first request: LDS was not resent.
            (stream,) = second.ads.registry.by_node(NODE_ID)
            assert stream.protocol == protocol
            assert stream.types[LISTENER].sent_nonce == ""
            assert stream.types[ROUTE].sent_nonce != ""
        finally:
            await stop(second)
    finally:
        await b.close()
    saved = read_cache(path, namespace="default")
    assert saved is not None
    (route,) = saved.resources[ROUTE]
    assert catch_all_timeout(route.update) == 7.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_restored_names_get_no_does_not_exist_timer(tmp_path, protocol):
    """The control plane has nothing new to send, so only the timer could remove them."""
    path = tmp_path / "cache.json"
    _, server, port = await start(canary_model())
    try:
        values = await _fill_cache(port, path, protocol)
        recorders: dict[tuple[str, str], Recorder] = {}
        async with client(port, protocol=protocol, cache_path=str(path),
                          resource_timeout=0.1) as b:
            _watch_all(b, recorders, [n for t, n in values if t == ENDPOINT])
            registry = server.ads.registry
            assert await registry.wait_for(lambda: any(
                len(s.types) == 4 for s in registry.by_node(NODE_ID)))
            await asyncio.sleep(0.2)  # twice the timeout
            assert all(r.log == ["changed"] for r in recorders.values())
    finally:
        await stop(server)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_restored_listener_and_cluster_the_server_no_longer_has_are_removed(
        tmp_path, protocol):
    path = tmp_path / "cache.json"
    _, first, port = await start(canary_model())
    try:
        await _fill_cache(port, path, protocol)
    finally:
        await stop(first)
    _, second, _ = await start(ratings_only(), port)  # no reviews any more
    lds, cds = Recorder(), Recorder()
    try:
        async with client(port, protocol=protocol, cache_path=str(path)) as b:
            b.watch(LISTENER, "reviews", lds)
            b.watch(CLUSTER, V1, cds)
            assert lds.log == cds.log == ["changed"]  # restored
            await wait_for(lambda: lds.removed and cds.removed)
            assert lds.log == cds.log == ["changed", "removed"]
            assert b.cached(LISTENER, "reviews") is None
    finally:
        await stop(second)
    saved = read_cache(path, namespace="default")
    assert saved is not None and LISTENER not in saved.resources


async def test_corrupt_cache_file_is_ignored_and_replaced(tmp_path, caplog):
    path = tmp_path / "cache.json"
    path.write_bytes(b"{not json")
    _, server, port = await start(canary_model())
    lds = Recorder()
    try:
        with caplog.at_level(logging.WARNING, "meshlib.xds._persist"):
            async with client(port, cache_path=str(path)) as xds:
                xds.watch(LISTENER, "reviews", lds)
                await wait_for(lambda: lds.changed)
                await wait_for(lambda: read_cache(path, namespace="default") is not None)
    finally:
        await stop(server)
    assert "is corrupt, ignored" in caplog.text
    saved = read_cache(path, namespace="default")
    assert saved is not None and [e.name for e in saved.resources[LISTENER]] == ["reviews"]


def _saved_names(path: Path) -> set[str]:
    saved = read_cache(path, namespace="default")
    return {e.name for entries in saved.resources.values() for e in entries} if saved else set()


async def test_values_no_longer_watched_leave_the_file(tmp_path):
    path = tmp_path / "cache.json"
    _, server, port = await start(canary_model())
    try:
        async with client(port, cache_path=str(path), cache_write_interval=0.02) as xds:
            xds.watch(LISTENER, "reviews", Recorder())
            cancel_rds = xds.watch(ROUTE, RDS, Recorder())
            await wait_for(lambda: _saved_names(path) == {"reviews", RDS})
            cancel_rds()
            xds.watch(CLUSTER, V1, Recorder())  # its response makes the next write
            await wait_for(lambda: _saved_names(path) == {"reviews", V1})
    finally:
        await stop(server)


async def test_the_last_write_on_close_keeps_what_a_shutdown_unwatched(tmp_path):
    """An application drops its watches before it closes the client (as Mesh does)."""
    path = tmp_path / "cache.json"
    _, server, port = await start(canary_model())
    lds, rds, cds = Recorder(), Recorder(), Recorder()
    try:
        async with client(port, cache_path=str(path), cache_write_interval=60) as xds:
            cancels = [xds.watch(LISTENER, "reviews", lds), xds.watch(ROUTE, RDS, rds)]
            await wait_for(lambda: lds.changed and rds.changed)
            cancels.append(xds.watch(CLUSTER, V1, cds))
            await wait_for(lambda: cds.changed)
            assert V1 not in _saved_names(path)  # the next periodic write is a minute away
            for cancel in cancels:
                cancel()
        assert _saved_names(path) == {"reviews", RDS, V1}
    finally:
        await stop(server)
