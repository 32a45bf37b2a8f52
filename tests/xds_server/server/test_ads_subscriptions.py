"""Subscriptions over a real socket: changes inside ACKs, unknown names, wildcard,
reconnect, and ADS order of a push."""

from __future__ import annotations

from tests.xds_server.server.ads_test_client import AdsEnv, SotwClient, sotw_req
from tests.xds_server.xds_test_resources import grpc_node, mesh, names_of
from xds_server.cache import Snapshot
from xds_server.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

GROUP = "grpc/default"
V1V2 = ["reviews-v1", "reviews-v2"]


async def ack(client: SotwClient, names: list[str], response: object) -> None:
    await client.send(sotw_req(response.type_url, names, nonce=response.nonce,  # type: ignore[attr-defined]
                               version=response.version_info))  # type: ignore[attr-defined]


async def test_subscription_change_inside_an_ack(ads_env: AdsEnv) -> None:
    ads_env.cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
    client = SotwClient(ads_env.channel)
    await client.send(sotw_req(CLUSTER, ["reviews-v1"], node=grpc_node()))
    r = await client.recv()
    await ack(client, ["reviews-v1"], r)
    await client.expect_silence(0.1)
    await ack(client, V1V2, r)  # same nonce, more names: what gRPC does
    r2 = await client.recv()
    assert names_of(r2) == V1V2
    assert ads_env.ads.registry.by_node("client-1")[0].types[CLUSTER].acks == 1
    client.close()


async def test_unknown_lds_cds_names_get_an_empty_answer_at_once(ads_env: AdsEnv) -> None:
    ads_env.cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
    client = SotwClient(ads_env.channel)
    await client.send(sotw_req(LISTENER, ["ghost:50051"], node=grpc_node()))
    lds = await client.recv()
    assert lds.type_url == LISTENER and list(lds.resources) == []
    assert [e.resource_name.name for e in lds.resource_errors] == ["ghost:50051"]
    await client.send(sotw_req(CLUSTER, ["ghost"]))
    cds = await client.recv()
    assert list(cds.resources) == []
    await client.send(sotw_req(ROUTE, ["ghost"]))
    await client.expect_silence()
    ads_env.cache.set_snapshot(GROUP, Snapshot.from_messages(
        mesh({"reviews": {"reviews-v1": (1,)}, "ghost": {"ghost-v1": (2,)}})))
    rds = await client.recv()
    assert rds.type_url == ROUTE and names_of(rds) == ["ghost"]
    client.close()


async def test_wildcard_listeners_and_clusters(ads_env: AdsEnv) -> None:
    ads_env.cache.set_snapshot(GROUP, Snapshot.from_messages(
        mesh({"a": {"a": (1,)}, "b": {"b": (2,)}})))
    client = SotwClient(ads_env.channel)
    await client.send(sotw_req(LISTENER, [], node=grpc_node()))
    lds = await client.recv()
    assert names_of(lds) == ["a", "b"]
    await ack(client, [], lds)
    ads_env.cache.set_snapshot(GROUP, Snapshot.from_messages(mesh({"a": {"a": (1,)}})))
    lds2 = await client.recv()
    assert names_of(lds2) == ["a"]
    client.close()


async def test_reconnect_does_not_resend_what_the_client_has(ads_env: AdsEnv) -> None:
    snapshot = Snapshot.from_messages(mesh())
    ads_env.cache.set_snapshot(GROUP, snapshot)
    first = SotwClient(ads_env.channel)
    await first.send(sotw_req(ROUTE, ["reviews"], node=grpc_node("n1")))
    r = await first.recv()
    await ack(first, ["reviews"], r)
    assert await ads_env.ads.registry.wait_acked("n1", ROUTE, r.version_info)
    first.close()
    assert await ads_env.ads.registry.wait_for(lambda: not ads_env.ads.registry.streams())

    second = SotwClient(ads_env.channel)
    await second.send(sotw_req(ROUTE, ["reviews"], node=grpc_node("n1"),
                               version=r.version_info, nonce=r.nonce))
    await second.expect_silence()
    assert ads_env.ads.registry.has_acked("n1", ROUTE, r.version_info)
    ads_env.cache.set_snapshot(GROUP, Snapshot.from_messages(
        mesh(weights={"reviews": {"reviews-v1": 9, "reviews-v2": 1}})))
    pushed = await second.recv()
    assert pushed.type_url == ROUTE and pushed.version_info != r.version_info
    second.close()


async def test_a_push_is_written_in_ads_order(ads_env: AdsEnv) -> None:
    ads_env.cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))
    client = SotwClient(ads_env.channel)
    node = grpc_node()
    for type_url, names in ((LISTENER, ["reviews"]), (ROUTE, ["reviews"]),
                            (CLUSTER, V1V2), (ENDPOINT, V1V2)):
        await client.send(sotw_req(type_url, names, node=node))
        node = None  # type: ignore[assignment]
        await ack(client, names, await client.recv())
    registry = ads_env.ads.registry
    assert await registry.wait_for(  # all four watches open again before the push
        lambda: all(t.acks == 1 for t in registry.by_node("client-1")[0].types.values()))
    changed = mesh({"reviews": {"reviews-v1": (7,), "reviews-v2": (8,)}},
                   weights={"reviews": {"reviews-v1": 1, "reviews-v2": 3}})
    for name in V1V2:
        changed[CLUSTER][name].connect_timeout.seconds = 5
    changed[LISTENER]["reviews"].stat_prefix = "new"
    ads_env.cache.set_snapshot(GROUP, Snapshot.from_messages(changed))
    order = [(await client.recv()).type_url for _ in range(4)]
    assert order == [CLUSTER, ENDPOINT, LISTENER, ROUTE]
    client.close()
