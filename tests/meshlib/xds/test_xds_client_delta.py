"""XdsClient over delta and state-of-the-world ADS against the real control plane
in-process: the same watcher callbacks over both, the fallback from delta to SotW, and
NACKs over delta against a scripted server."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import message

from meshlib.xds import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    ClusterUpdate,
    EndpointsUpdate,
    XdsClientConfig,
)
from tests.meshlib.xds.xds_cp import (
    NODE_ID,
    catch_all_timeout,
    client,
    slower_canary,
    start,
    start_sotw_only,
    stop,
)
from tests.meshlib.xds.xds_models import RDS, V1, canary_model, pack
from tests.meshlib.xds.xds_watchers import Recorder, wait_for

PROTOCOLS = ["delta", "sotw"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_watchers_see_the_same_over_delta_and_sotw(protocol):
    cp, server, port = await start(canary_model())
    lds, rds, cds, eds = Recorder(), Recorder(), Recorder(), Recorder()
    no_listener, no_route = Recorder(), Recorder()
    try:
        async with client(port, protocol=protocol, resource_timeout=0.3) as xds:
            started = time.monotonic()
            xds.watch(LISTENER, "reviews", lds)
            xds.watch(ROUTE, RDS, rds)
            xds.watch(CLUSTER, V1, cds)
            xds.watch(LISTENER, "no-such-service", no_listener)
            xds.watch(ROUTE, "no-such-route", no_route)
            await wait_for(lambda: cds.changed)
            cluster = cds.changed[0]
            assert isinstance(cluster, ClusterUpdate)
            xds.watch(ENDPOINT, cluster.eds_service_name, eds)
            await wait_for(lambda: lds.changed and rds.changed and eds.changed)
            await wait_for(lambda: no_listener.removed, timeout=0.25)  # told: no timer
            await wait_for(lambda: no_route.removed)  # RDS: only the timer knows
            assert time.monotonic() - started >= 0.3
            endpoints = eds.changed[0]
            assert isinstance(endpoints, EndpointsUpdate)
            assert sorted(e.address for e in endpoints.endpoints if e.healthy) == [
                "10.0.0.1", "10.0.0.2"]
            assert xds.protocol == protocol and xds.connected.is_set()
            (stream,) = server.ads.registry.by_node(NODE_ID)
            assert stream.protocol == protocol
            assert await server.ads.registry.wait_for(lambda: all(
                t.acks and not t.nacks for t in server.ads.registry.by_node(NODE_ID)[0]
                .types.values()))

            await cp.apply(slower_canary())
            await wait_for(lambda: len(rds.changed) == 2)
            assert catch_all_timeout(rds.changed[1]) == 7.0
            for recorder in (lds, cds, eds):
                assert recorder.log == ["changed"]  # unchanged: not delivered again
            assert no_listener.log == no_route.log == ["removed"]
    finally:
        await stop(server)


async def test_auto_falls_back_to_sotw_once_for_the_life_of_the_client(caplog):
    ads, server, port = await start_sotw_only(canary_model())
    lds = Recorder()
    try:
        with caplog.at_level(logging.WARNING, "meshlib.xds._client"):
            async with client(port) as xds:
                assert xds.protocol == "delta"
                xds.watch(LISTENER, "reviews", lds)
                await wait_for(lambda: lds.changed)
                assert xds.protocol == "sotw" and ads.delta_calls == 1
                assert lds.log == ["changed"]  # the failed delta attempt is no outage
                (stream,) = ads.registry.by_node(NODE_ID)
                assert stream.protocol == "sotw"

                await stop(server)
                await wait_for(lambda: lds.ambient)
                again, server, _ = await start_sotw_only(slower_canary(), port)
                rds = Recorder()
                xds.watch(ROUTE, RDS, rds)
                await wait_for(lambda: rds.changed)
                assert catch_all_timeout(rds.changed[0]) == 7.0
                assert again.delta_calls == 0  # reconnects go straight to SotW
    finally:
        await stop(server)
    assert caplog.text.count("does not implement delta ADS") == 1


async def test_delta_only_client_does_not_fall_back():
    ads, server, port = await start_sotw_only(canary_model())
    lds = Recorder()
    try:
        async with client(port, protocol="delta") as xds:
            xds.watch(LISTENER, "reviews", lds)
            await wait_for(lambda: lds.errors and ads.delta_calls >= 2)
            assert "UNIMPLEMENTED" in str(lds.errors[0]) and xds.protocol == "delta"
            assert lds.log == ["error"]  # once per outage
    finally:
        await stop(server)


async def test_sotw_client_never_tries_delta():
    ads, server, port = await start_sotw_only(canary_model())
    lds = Recorder()
    try:
        async with client(port, protocol="sotw") as xds:
            xds.watch(LISTENER, "reviews", lds)
            await wait_for(lambda: lds.changed)
            assert ads.delta_calls == 0
    finally:
        await stop(server)


def test_config_refuses_an_unknown_protocol():
    with pytest.raises(ValueError, match="protocol"):
        XdsClientConfig(server_address="x:1", node_id="n1", protocol="xds")  # type: ignore[arg-type]


class ScriptedDeltaAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Answers the n-th delta request with ``responses[n]`` (None: no answer)."""

    def __init__(self, responses: list[discovery_pb2.DeltaDiscoveryResponse | None]) -> None:
        self.responses = responses
        self.requests: list[discovery_pb2.DeltaDiscoveryRequest] = []

    async def DeltaAggregatedResources(
            self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
            context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        async for request in request_iterator:
            self.requests.append(request)
            if self.responses and (response := self.responses.pop(0)) is not None:
                yield response


def _lds(nonce: str, *listeners: message.Message) -> discovery_pb2.DeltaDiscoveryResponse:
    return discovery_pb2.DeltaDiscoveryResponse(
        type_url=LISTENER, nonce=nonce, system_version_info=nonce,
        resources=[discovery_pb2.Resource(name=listener.name, version=nonce,  # type: ignore[attr-defined]
                                          resource=pack(listener)) for listener in listeners])


async def test_invalid_update_over_delta_is_ambient_with_a_value_and_an_error_without(canary):
    good = canary[LISTENER]["reviews"]
    bad = listener_pb2.Listener(name="reviews")  # no api_listener
    bad_other = listener_pb2.Listener(name="ratings")
    # Requests: subscribe reviews → "n1"; ACK; subscribe ratings → "n2"; NACK.
    ads = ScriptedDeltaAds([_lds("n1", good), None, _lds("n2", bad, bad_other)])
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    reviews, ratings = Recorder(), Recorder()
    try:
        async with client(port) as xds:
            xds.watch(LISTENER, "reviews", reviews)
            await wait_for(lambda: reviews.changed)
            xds.watch(LISTENER, "ratings", ratings)  # the request that gets "n2"
            await wait_for(lambda: reviews.ambient and ratings.errors)
            assert reviews.log == ["changed", "ambient"] and ratings.log == ["error"]
            assert "api_listener" in str(reviews.ambient[0])
            assert xds.cached(LISTENER, "reviews") == reviews.changed[0]  # kept
            await wait_for(lambda: len(ads.requests) == 4)
    finally:
        await stop(server)
    subscribe, ack, subscribe_more, nack = ads.requests
    assert subscribe.node.id == NODE_ID and list(subscribe.resource_names_subscribe) == [
        "reviews"]
    assert (ack.response_nonce, ack.HasField("error_detail")) == ("n1", False)
    assert (list(subscribe_more.resource_names_subscribe), subscribe_more.response_nonce) == (
        ["ratings"], "")
    assert nack.response_nonce == "n2" and "ratings" in nack.error_detail.message
