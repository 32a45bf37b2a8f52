"""Fixtures: an ADS server on 127.0.0.1:0 over a fresh cache, and a client channel.

Also makes the shared builders in ``tests/xds_server/xds_test_resources.py`` importable.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

_SHARED = str(Path(__file__).resolve().parents[1])
if _SHARED not in sys.path:
    sys.path.insert(0, _SHARED)

from ads_test_client import AdsEnv, Recorder  # noqa: E402

from xds_server.cache import SnapshotCache  # noqa: E402
from xds_server.server import serve  # noqa: E402


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
