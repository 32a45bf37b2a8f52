"""The real control plane in-process for XdsClient tests: full (SotW + delta) or
SotW-only, fast reconnect settings, and a changed canary model."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

from meshlib.xds import Backoff, RouteConfigUpdate, XdsClient, XdsClientConfig
from tests.meshlib.xds.xds_models import canary_model, mesh, service
from xds_server.control_plane import ControlPlane
from xds_server.model import MeshModel
from xds_server.server import AdsServer, serve

# gRPC's own reconnect backoff (1 s at first) would otherwise dominate the tests.
FAST_CHANNEL = (("grpc.initial_reconnect_backoff_ms", 50),
                ("grpc.min_reconnect_backoff_ms", 50),
                ("grpc.max_reconnect_backoff_ms", 200))
FAST_BACKOFF = Backoff(base=0.05, cap=0.2, random=lambda: 0.5)
NODE_ID = "meshlib-1"


def client(port: int, **config: Any) -> XdsClient:
    """An XdsClient for ``127.0.0.1:port`` that reconnects fast."""
    return XdsClient(XdsClientConfig(server_address=f"127.0.0.1:{port}", node_id=NODE_ID,
                                     channel_options=FAST_CHANNEL, **config),
                     backoff=FAST_BACKOFF)


async def start(model: MeshModel, port: int = 0) -> tuple[ControlPlane, grpc.aio.Server, int]:
    """The real control plane serving SotW and delta on ``127.0.0.1:port``."""
    cp = ControlPlane(model)
    server, port = await serve(("127.0.0.1", port), cp.cache, cp.callbacks())
    return cp, server, port


class SotwOnlyAds(AdsServer):
    """The real ADS server, with delta answered UNIMPLEMENTED (an older control plane)."""

    delta_calls = 0

    async def DeltaAggregatedResources(self, request_iterator: AsyncIterator[Any],
                                       context: grpc.aio.ServicerContext) -> None:
        self.delta_calls += 1
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "delta ADS is not served here")


async def start_sotw_only(model: MeshModel,
                          port: int = 0) -> tuple[SotwOnlyAds, grpc.aio.Server, int]:
    cp = ControlPlane(model)
    server = grpc.aio.server()
    ads = SotwOnlyAds(cp.cache, cp.callbacks())
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return ads, server, port


async def stop(server: grpc.aio.Server) -> None:
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await server.stop(grace=None)


def slower_canary() -> MeshModel:
    """The canary model with the catch-all rule's timeout 2.5 s → 7 s."""
    model = canary_model()
    (route,) = model.routes
    rules = (*route.rules[:-1], dataclasses.replace(route.rules[-1], timeout=7.0))
    return dataclasses.replace(model, routes=(dataclasses.replace(route, rules=rules),))


def ratings_only() -> MeshModel:
    """A model without the canary's services: only ``ratings``."""
    return mesh(service("ratings"))


def catch_all_timeout(update: object) -> float | None:
    """The timeout of the canary route's catch-all rule."""
    assert isinstance(update, RouteConfigUpdate)
    action = update.virtual_hosts[0].routes[-1].action
    assert action is not None
    return action.timeout
