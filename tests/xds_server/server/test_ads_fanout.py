"""One set_snapshot reaches 100 concurrent state-of-the-world streams."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc

from tests.xds_server.server.ads_test_client import AdsEnv, SotwClient, sotw_req
from tests.xds_server.xds_test_resources import grpc_node, mesh
from xds_server.cache import Snapshot
from xds_server.resources import ENDPOINT

GROUP = "grpc/default"
V1V2 = ["reviews-v1", "reviews-v2"]
STREAMS = 100


async def test_100_streams_receive_one_update(
    ads_env: AdsEnv, record_property: Callable[[str, object], None]
) -> None:
    ads_env.cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{ads_env.port}") for _ in range(STREAMS)]
    clients = [SotwClient(ch) for ch in channels]
    try:
        async def start(i: int, client: SotwClient) -> None:
            await client.send(sotw_req(ENDPOINT, V1V2, node=grpc_node(f"n{i}")))
            r = await client.recv(timeout=10)
            await client.send(sotw_req(ENDPOINT, V1V2, nonce=r.nonce, version=r.version_info))

        await asyncio.gather(*(start(i, c) for i, c in enumerate(clients)))
        registry = ads_env.ads.registry
        first = Snapshot.from_messages(mesh()).version_of(ENDPOINT, V1V2)
        assert await registry.wait_for(
            lambda: sum(s.types[ENDPOINT].acked_version == first for s in registry.streams())
            == STREAMS, timeout=10)

        update = Snapshot.from_messages(mesh({"reviews": {"reviews-v1": (1,), "reviews-v2": (2,)}}))
        expected = update.version_of(ENDPOINT, V1V2)
        received: list[float] = []

        async def receive(client: SotwClient) -> None:
            response = await client.recv(timeout=10)
            received.append(time.monotonic())
            assert response.version_info == expected

        readers = [asyncio.create_task(receive(c)) for c in clients]
        await asyncio.sleep(0.05)  # all reads pending
        start_at = time.monotonic()
        ads_env.cache.set_snapshot(GROUP, update)
        await asyncio.gather(*readers)
        to_last = max(received) - start_at
        record_property("set_snapshot_to_last_receipt_s", round(to_last, 4))
        print(f"\n{STREAMS} streams: set_snapshot → last receipt {to_last * 1000:.1f} ms")
        assert len(received) == STREAMS
        assert to_last < 5.0
    finally:
        for client in clients:
            client.close()
        await asyncio.gather(*(ch.close() for ch in channels))
