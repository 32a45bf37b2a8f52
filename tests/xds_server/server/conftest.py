"""Fixtures: an ADS server on 127.0.0.1:0 over a fresh cache, and a client channel."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from tests.xds_server.server.ads_test_client import AdsEnv, Recorder
from xds_server.cache import SnapshotCache
from xds_server.server import serve


@pytest.fixture
async def ads_env() -> AsyncIterator[AdsEnv]:
    cache = SnapshotCache()
    recorder = Recorder()
    server, port = await serve(("127.0.0.1", 0), cache, recorder.callbacks())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield AdsEnv(cache, server.ads, server, port, channel, recorder)  # type: ignore[attr-defined]
    finally:
        await channel.close()
        await server.stop(None)
