"""What a client sends never crashes the server or stalls a stream; hooks behave."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest

from tests.xds_server.server.ads_test_client import (
    AdsEnv,
    DeltaClient,
    SotwClient,
    delta_req,
    sotw_req,
)
from tests.xds_server.xds_test_resources import grpc_node, mesh, names_of
from xds_server.cache import Snapshot
from xds_server.resources import CLUSTER, ENDPOINT

GROUP = "grpc/default"
RUNTIME = "type.googleapis.com/envoy.service.runtime.v3.Runtime"


async def test_unknown_type_no_type_and_no_node_do_not_break_the_stream(ads_env: AdsEnv) -> None:
    ads_env.cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
    client = SotwClient(ads_env.channel)
    await client.send(sotw_req(RUNTIME, ["rtds"]))  # no node either
    await client.send(sotw_req(""))
    await client.send(sotw_req(CLUSTER, ["reviews-v1"], nonce="never-sent", error="?"))
    r = await client.recv()
    assert r.type_url == CLUSTER and names_of(r) == ["reviews-v1"]
    [stream] = ads_env.ads.registry.streams()
    assert stream.node_id == "" and set(stream.types) == {RUNTIME, CLUSTER}
    client.close()


async def test_refusing_request_hook_closes_the_stream_unavailable(ads_env: AdsEnv) -> None:
    def refuse(sid: int, node: Any, request: Any) -> None:
        raise PermissionError("node not allowed")

    ads_env.recorder.extra["stream_request"] = refuse
    client = SotwClient(ads_env.channel)
    await client.send(sotw_req(CLUSTER, ["a"], node=grpc_node()))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.call.read()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "node not allowed" in (info.value.details() or "")
    assert await ads_env.ads.registry.wait_for(lambda: not ads_env.ads.registry.streams())


async def test_failing_observer_hook_is_logged_not_fatal(ads_env: AdsEnv) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("metrics exploded")

    ads_env.recorder.extra["stream_response"] = broken
    ads_env.recorder.extra["ack"] = broken
    ads_env.cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
    client = SotwClient(ads_env.channel)
    await client.send(sotw_req(CLUSTER, ["reviews-v1"], node=grpc_node()))
    r = await client.recv()
    await client.send(sotw_req(CLUSTER, ["reviews-v1"], nonce=r.nonce, version=r.version_info))
    await client.send(sotw_req(ENDPOINT, ["reviews-v1"]))
    assert names_of(await client.recv()) == ["reviews-v1"]
    client.close()


async def test_first_snapshot_built_by_the_request_hook_is_served(ads_env: AdsEnv) -> None:
    def build(sid: int, node: Any, request: Any) -> None:
        group = ads_env.cache.group_key(node)
        if ads_env.cache.get_snapshot(group) is None:
            ads_env.cache.set_snapshot(group, Snapshot.from_messages(mesh()))

    ads_env.recorder.extra["stream_request"] = build
    client = SotwClient(ads_env.channel)
    await client.send(sotw_req(CLUSTER, ["reviews-v2"], node=grpc_node(namespace="shop")))
    assert names_of(await client.recv()) == ["reviews-v2"]
    assert ads_env.cache.groups() == ("grpc/shop",)
    client.close()


async def test_hooks_order_and_response_latency_input(ads_env: AdsEnv) -> None:
    snapshot = Snapshot.from_messages(mesh())
    ads_env.cache.set_snapshot(GROUP, snapshot)
    client = SotwClient(ads_env.channel)
    await client.send(sotw_req(CLUSTER, ["reviews-v1"], node=grpc_node("n1")))
    await client.recv()
    client.close()
    rec = ads_env.recorder
    assert await ads_env.ads.registry.wait_for(lambda: bool(rec.of("stream_closed")))
    names = [n for n, _ in rec.events]
    assert names == ["stream_open", "node_connected", "stream_request", "stream_response",
                     "node_disconnected", "stream_closed"]
    [(_sid, node, request, response, created_at)] = rec.of("stream_response")
    assert node.id == "n1" and request.type_url == CLUSTER == response.type_url
    assert created_at == snapshot.created_at <= time.monotonic()
    assert rec.of("node_connected")[0][2] == "sotw"


async def test_closing_a_stream_cancels_its_watches(ads_env: AdsEnv) -> None:
    ads_env.cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
    sotw, delta = SotwClient(ads_env.channel), DeltaClient(ads_env.channel)
    await sotw.send(sotw_req(ENDPOINT, ["ghost"], node=grpc_node("s")))
    await delta.send(delta_req(CLUSTER, node=grpc_node("d")))
    r = await delta.recv()
    await delta.send(delta_req(CLUSTER, nonce=r.nonce))
    registry = ads_env.ads.registry
    assert await registry.wait_for(lambda: len(ads_env.cache.open_watches()) == 2)
    assert {s.protocol for s in registry.streams()} == {"sotw", "delta"}
    sotw.close()
    delta.close()
    assert await registry.wait_for(lambda: not registry.streams())
    assert ads_env.cache.open_watches() == ()
    assert len(ads_env.recorder.of("delta_stream_closed")) == 1


async def test_serve_accepts_a_host_port_string() -> None:
    from xds_server.cache import SnapshotCache
    from xds_server.server import serve

    server, port = await serve("127.0.0.1:0", SnapshotCache())
    try:
        assert port > 0 and server.ads.registry.streams() == ()  # type: ignore[attr-defined]
    finally:
        await server.stop(None)
