"""Delta ADS over a real socket: add / update / remove, unknown names, reconnect."""

from __future__ import annotations

from tests.xds_server.server.ads_test_client import AdsEnv, DeltaClient, delta_req
from tests.xds_server.xds_test_resources import grpc_node, mesh, names_of
from xds_server.cache import Snapshot
from xds_server.resources import CLUSTER, ENDPOINT

GROUP = "grpc/default"


def snap(**clusters: int) -> Snapshot:
    return Snapshot.from_messages(mesh({"svc": {c: (p,) for c, p in clusters.items()}}))


async def test_delta_add_update_remove(ads_env: AdsEnv) -> None:
    ads_env.cache.set_snapshot(GROUP, snap(a=1, b=2))
    client = DeltaClient(ads_env.channel)
    await client.send(delta_req(CLUSTER, ["*"], node=grpc_node("d1")))
    r = await client.recv()
    assert names_of(r) == ["a", "b"]
    await client.send(delta_req(CLUSTER, nonce=r.nonce))
    await client.send(delta_req(ENDPOINT, ["a", "b", "ghost"]))
    e = await client.recv()
    assert names_of(e) == ["a", "b"] and list(e.removed_resources) == ["ghost"]
    await client.send(delta_req(ENDPOINT, nonce=e.nonce))
    assert await ads_env.ads.registry.wait_acked("d1", ENDPOINT, e.system_version_info)

    ads_env.cache.set_snapshot(GROUP, snap(a=1, b=20, c=3))  # add c, update b's endpoints
    added = await client.recv()
    assert added.type_url == CLUSTER and names_of(added) == ["c"]
    updated = await client.recv()
    assert updated.type_url == ENDPOINT and names_of(updated) == ["b"]
    await client.send(delta_req(CLUSTER, nonce=added.nonce))
    await client.send(delta_req(ENDPOINT, nonce=updated.nonce))
    assert await ads_env.ads.registry.wait_acked("d1", ENDPOINT, updated.system_version_info)

    ads_env.cache.set_snapshot(GROUP, snap(a=1, c=3))  # remove b
    removed_c = await client.recv()
    removed_e = await client.recv()
    assert (removed_c.type_url, list(removed_c.removed_resources)) == (CLUSTER, ["b"])
    assert (removed_e.type_url, list(removed_e.removed_resources)) == (ENDPOINT, ["b"])
    assert list(removed_c.resources) == []
    client.close()


async def test_delta_reconnect_with_initial_resource_versions(ads_env: AdsEnv) -> None:
    s = snap(a=1, b=2)
    ads_env.cache.set_snapshot(GROUP, s)
    client = DeltaClient(ads_env.channel)
    have = {"a": s.get(ENDPOINT, "a").version, "b": s.get(ENDPOINT, "b").version}
    await client.send(delta_req(ENDPOINT, ["a", "b"], initial=have, node=grpc_node()))
    await client.expect_silence()
    kept = {"a": s.get(CLUSTER, "a").version, "gone": "x"}
    await client.send(delta_req(CLUSTER, initial=kept))  # legacy wildcard
    r = await client.recv()
    assert names_of(r) == ["b"] and list(r.removed_resources) == ["gone"]
    client.close()
