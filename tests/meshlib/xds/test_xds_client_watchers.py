"""XdsClient watcher callbacks for invalid resources (gRFC A46/A88), against a scripted
ADS server that answers each request with the next canned response."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import message

from meshlib.xds import LISTENER, Backoff, XdsClient, XdsClientConfig
from tests.meshlib.xds.xds_models import pack
from tests.meshlib.xds.xds_watchers import Recorder, wait_for


class ScriptedAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Answers the n-th request received with ``responses[n]`` (None: no answer);
    records the requests."""

    def __init__(self, responses: list[discovery_pb2.DiscoveryResponse | None]) -> None:
        self.responses = responses
        self.requests: list[discovery_pb2.DiscoveryRequest] = []

    async def StreamAggregatedResources(
            self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
            context: grpc.aio.ServicerContext) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        async for request in request_iterator:
            self.requests.append(request)
            if self.responses and (response := self.responses.pop(0)) is not None:
                yield response


def _lds(version: str, *listeners: message.Message) -> discovery_pb2.DiscoveryResponse:
    return discovery_pb2.DiscoveryResponse(
        type_url=LISTENER, version_info=version, nonce=f"n{version}",
        resources=[pack(listener) for listener in listeners])


async def test_invalid_update_is_ambient_with_a_value_and_an_error_without(canary):
    good = canary[LISTENER]["reviews"]
    bad = listener_pb2.Listener(name="reviews")  # no api_listener
    bad_other = listener_pb2.Listener(name="ratings")
    # Requests: subscribe reviews → "1"; ACK; subscribe ratings → "2"; NACK.
    ads = ScriptedAds([_lds("1", good), None, _lds("2", bad, bad_other)])
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    reviews, ratings = Recorder(), Recorder()
    config = XdsClientConfig(server_address=f"127.0.0.1:{port}", node_id="n1")
    try:
        async with XdsClient(config, backoff=Backoff(random=lambda: 0.5)) as client:
            client.watch(LISTENER, "reviews", reviews)
            await wait_for(lambda: reviews.changed)
            client.watch(LISTENER, "ratings", ratings)  # the request that gets "2"
            await wait_for(lambda: reviews.ambient and ratings.errors)
            assert reviews.log == ["changed", "ambient"]
            assert "api_listener" in str(reviews.ambient[0])
            assert ratings.log == ["error"]
            assert client.cached(LISTENER, "reviews") == reviews.changed[0]  # kept
            await wait_for(lambda: len(ads.requests) == 4)
            nack = ads.requests[3]
            assert nack.version_info == "1" and nack.response_nonce == "n2"
            assert nack.error_detail.message
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await server.stop(grace=None)
    first = ads.requests[0]
    assert first.node.id == "n1"
    assert first.node.metadata.fields["MESHLIB_KIND"].string_value == "meshlib"
