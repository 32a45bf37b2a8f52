"""meshlib's asyncio channel against the real control plane and real backends."""

from __future__ import annotations

import asyncio
import collections

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import meshlib
from tests.e2e.mesh_files import policy_yaml
from tests.e2e.meshlib_backends import CHAT, GET, LIST, UPLOAD


async def test_aio_weighted_split_and_all_call_kinds(mesh_env):
    env = mesh_env({"reviews-v1": 1, "reviews-v2": 1}, {"reviews-v1": 80, "reviews-v2": 20})
    channel = env.mesh.aio_channel("reviews")
    get = channel.unary_unary(GET)
    counts = collections.Counter([(await get(b"", timeout=5)).decode() for _ in range(1000)])
    assert abs(counts["reviews-v2-0"] / 1000 - 0.2) < 0.05, counts
    call = get(b"", timeout=5)
    assert await call in (b"reviews-v1-0", b"reviews-v2-0")
    assert await call.code() == grpc.StatusCode.OK
    messages = [m async for m in channel.unary_stream(LIST)(b"", timeout=5)]
    assert len(messages) == 3
    await channel.channel_ready()

    async def requests():
        yield b"a"
        yield b"b"

    assert (await channel.stream_unary(UPLOAD)(requests(), timeout=5)).startswith(b"a+b@")
    echoed = [m async for m in channel.stream_stream(CHAT)(requests(), timeout=5)]
    assert [m[:1] for m in echoed] == [b"a", b"b"]
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    results = await asyncio.gather(*(get(b"", timeout=5) for _ in range(64)))
    assert len(results) == 64
    await env.mesh.aclose()


async def test_aio_retries_and_errors(mesh_env):
    env = mesh_env({"reviews-v1": 2}, extra=policy_yaml("reviews", """  retries:
    attempts: 3
    retryOn: [UNAVAILABLE]
    backoff: {baseInterval: 5ms, maxInterval: 20ms}
"""))
    flaky, _ = env.backends["reviews-v1"]
    get = env.mesh.aio_channel("reviews").unary_unary(GET)
    await get(b"", timeout=5)
    flaky.fail_next = 8
    assert len([await get(b"", timeout=5) for _ in range(40)]) == 40
    with pytest.raises(meshlib.ServiceNotFoundError):
        await env.mesh.aio_channel("nope").unary_unary(GET)(b"", timeout=5)
    for backend in env.backends["reviews-v1"]:
        backend.fail_always = True
    with pytest.raises(grpc.RpcError) as info:
        await get(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    await env.mesh.aclose()


async def test_aio_stream_metadata_first_then_iterate_is_one_call(mesh_env):
    env = mesh_env({"reviews-v1": 1})
    backend = env.backends["reviews-v1"][0]
    stream = env.mesh.aio_channel("reviews").unary_stream(LIST)
    await env.mesh.aio_channel("reviews").channel_ready()
    calls = backend.calls
    call = stream(b"", timeout=5)
    await call.initial_metadata()
    assert len([m async for m in call]) == 3
    assert backend.calls == calls + 1
    assert await call.code() == grpc.StatusCode.OK
    await env.mesh.aclose()
