"""ACK, NACK and stale nonces over a real socket (SotW and delta)."""

from __future__ import annotations

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
V1V2 = ["reviews-v1", "reviews-v2"]


def eds(port1: int, port2: int) -> Snapshot:
    return Snapshot.from_messages(mesh({"reviews": {"reviews-v1": (port1,),
                                                    "reviews-v2": (port2,)}}))


async def test_sotw_ack_is_visible_in_the_registry(ads_env: AdsEnv) -> None:
    snapshot = Snapshot.from_messages(mesh())
    ads_env.cache.set_snapshot(GROUP, snapshot)
    client = SotwClient(ads_env.channel)
    await client.send(sotw_req(CLUSTER, V1V2, node=grpc_node("n1")))
    r = await client.recv()
    assert names_of(r) == V1V2
    await client.send(sotw_req(CLUSTER, V1V2, nonce=r.nonce, version=r.version_info))
    version = snapshot.version_of(CLUSTER, V1V2)
    assert await ads_env.ads.registry.wait_acked("n1", CLUSTER, version, timeout=3)
    assert ads_env.recorder.of("ack")[-1][1:] == (grpc_node("n1"), CLUSTER, version)
    [stream] = ads_env.ads.registry.by_node("n1")
    assert stream.protocol == "sotw" and stream.group == GROUP
    assert stream.types[CLUSTER].sent_version == version
    await client.expect_silence()
    client.close()


async def test_sotw_nack_is_not_resent_and_the_stream_keeps_working(ads_env: AdsEnv) -> None:
    ads_env.cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
    client = SotwClient(ads_env.channel)
    await client.send(sotw_req(ENDPOINT, V1V2, node=grpc_node("n1")))
    r = await client.recv()
    await client.send(sotw_req(ENDPOINT, V1V2, nonce=r.nonce, error="locality has no weight"))
    await client.expect_silence()
    [nack] = ads_env.recorder.of("nack")
    assert nack[2] == ENDPOINT and nack[3].message == "locality has no weight"
    assert ads_env.ads.registry.by_node("n1")[0].types[ENDPOINT].nacks == 1
    ads_env.cache.set_snapshot(GROUP, eds(1, 2))
    push = await client.recv()
    assert push.version_info == eds(1, 2).version_of(ENDPOINT, V1V2)
    await client.send(sotw_req(ENDPOINT, V1V2, nonce=push.nonce, version=push.version_info))
    assert await ads_env.ads.registry.wait_acked("n1", ENDPOINT, push.version_info)
    client.close()


async def test_sotw_stale_nonce_is_ignored(ads_env: AdsEnv) -> None:
    ads_env.cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
    client = SotwClient(ads_env.channel)
    await client.send(sotw_req(ENDPOINT, ["reviews-v1"], node=grpc_node("n1")))
    r1 = await client.recv()
    await client.send(sotw_req(ENDPOINT, ["reviews-v1"], nonce=r1.nonce,
                               version=r1.version_info))
    assert await ads_env.ads.registry.wait_acked("n1", ENDPOINT, r1.version_info)
    ads_env.cache.set_snapshot(GROUP, eds(7, 8))
    r2 = await client.recv()
    await client.send(sotw_req(ENDPOINT, V1V2, nonce=r1.nonce, version=r1.version_info))
    await client.expect_silence()
    assert ads_env.ads.registry.by_node("n1")[0].types[ENDPOINT].names == ("reviews-v1",)
    await client.send(sotw_req(ENDPOINT, V1V2, nonce=r2.nonce, version=r2.version_info))
    r3 = await client.recv()
    assert names_of(r3) == V1V2
    client.close()


async def test_delta_ack_nack(ads_env: AdsEnv) -> None:
    ads_env.cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
    client = DeltaClient(ads_env.channel)
    await client.send(delta_req(CLUSTER, node=grpc_node("d1")))
    r = await client.recv()
    assert names_of(r) == V1V2
    await client.send(delta_req(CLUSTER, nonce=r.nonce))
    assert await ads_env.ads.registry.wait_acked("d1", CLUSTER, r.system_version_info)
    three = mesh({"reviews": {"reviews-v1": (50051,), "reviews-v2": (50052,),
                              "reviews-v3": (50053,)}})
    ads_env.cache.set_snapshot(GROUP, Snapshot.from_messages(three))
    r2 = await client.recv()
    assert names_of(r2) == ["reviews-v3"]
    await client.send(delta_req(CLUSTER, nonce=r2.nonce, error="bad v3"))
    await client.expect_silence()
    assert ads_env.recorder.of("nack")[-1][3].message == "bad v3"
    assert ads_env.ads.registry.by_node("d1")[0].types[CLUSTER].nacks == 1
    client.close()
