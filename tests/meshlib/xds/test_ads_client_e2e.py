"""One integration test: a thin asyncio shell drives AdsClientProtocol against the real
control plane, in-process, over a real gRPC stream on loopback."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from google.protobuf import struct_pb2

from meshlib.xds import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    AdsClientProtocol,
    ClusterUpdate,
    EndpointsUpdate,
    ListenerUpdate,
    ResourceChanged,
    RouteConfigUpdate,
)
from tests.meshlib.xds.xds_models import OWN, RDS, V1, V2, canary_model
from xds_server.control_plane import ControlPlane
from xds_server.server import serve


def _follow(ads: AdsClientProtocol, event: ResourceChanged) -> None:
    """Subscribe to what a new resource points at: listener → route → clusters → EDS."""
    update = event.update
    if isinstance(update, ListenerUpdate) and update.route_config_name:
        ads.subscribe(ROUTE, [update.route_config_name])
    elif isinstance(update, RouteConfigUpdate):
        ads.subscribe(CLUSTER, [c.name for vh in update.virtual_hosts for r in vh.routes
                                if r.action for c in r.action.clusters])
    elif isinstance(update, ClusterUpdate):
        ads.subscribe(ENDPOINT, [update.eds_service_name])


async def test_listener_route_cluster_endpoints_chain_is_acked():
    cp = ControlPlane(canary_model())
    server, port = await serve(("127.0.0.1", 0), cp.cache, cp.callbacks())
    metadata = struct_pb2.Struct()
    metadata.update({"MESHLIB_KIND": "meshlib"})
    ads = AdsClientProtocol(base_pb2.Node(id="meshlib-1", metadata=metadata))
    ads.subscribe(LISTENER, ["reviews"])
    outbox: asyncio.Queue = asyncio.Queue()

    async def requests():  # type: ignore[no-untyped-def]
        while True:
            yield await outbox.get()

    def flush() -> None:
        for request in ads.outgoing():
            outbox.put_nowait(request)

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(
                channel).StreamAggregatedResources(requests())
            flush()
            async with asyncio.timeout(10):
                async for response in call:
                    for event in ads.receive(response):
                        assert isinstance(event, ResourceChanged), event
                        _follow(ads, event)
                    flush()
                    if {V1, V2} <= set(ads.resources(ENDPOINT)):
                        break
            registry = server.ads.registry
            for type_url in (LISTENER, ROUTE, CLUSTER, ENDPOINT):
                assert await registry.wait_acked("meshlib-1", type_url, ads.version(type_url))
            call.cancel()
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await server.stop(grace=None)

    assert ads.resources(LISTENER)["reviews"].route_config_name == RDS
    assert ads.subscriptions(CLUSTER) == {V1, V2}  # OWN is not routed to
    assert OWN not in ads.resources(CLUSTER)
    v1 = ads.resources(ENDPOINT)[V1]
    assert isinstance(v1, EndpointsUpdate)
    assert sorted(e.address for e in v1.endpoints if e.healthy) == ["10.0.0.1", "10.0.0.2"]
    samples = cp.metrics.registry
    assert samples.get_sample_value("meshlib_xds_acks_total", {"type": "EDS"}) >= 1
    for short in ("LDS", "RDS", "CDS", "EDS"):
        assert not samples.get_sample_value("meshlib_xds_nacks_total", {"type": short})
