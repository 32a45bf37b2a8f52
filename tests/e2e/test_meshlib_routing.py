"""meshlib's channels against the real control plane process and real backends:
routing, balancing, all four call kinds, generated stubs, errors."""

from __future__ import annotations

import collections
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import meshlib
from meshlib import deadline_scope
from tests.e2e.mesh_files import policy_yaml, service_yaml
from tests.e2e.meshlib_backends import CHAT, GET, LIST, UPLOAD


def names(channel: grpc.Channel, n: int, metadata=None) -> collections.Counter:
    get = channel.unary_unary(GET)
    return collections.Counter(get(b"", timeout=5, metadata=metadata).decode().rsplit("-", 1)[0]
                               for _ in range(n))


def test_weighted_split_and_header_routing(mesh_env):
    env = mesh_env({"reviews-v1": 1, "reviews-v2": 1}, {"reviews-v1": 90, "reviews-v2": 10},
                   header=("x-canary", "1", "reviews-v2"))
    channel = env.mesh.channel("reviews")
    split = names(channel, 2000)
    assert abs(split["reviews-v2"] / 2000 - 0.10) < 0.03, split
    assert names(channel, 200, metadata=[("x-canary", "1")]) == {"reviews-v2": 200}


def test_live_weight_shift(mesh_env):
    env = mesh_env({"reviews-v1": 1, "reviews-v2": 1}, {"reviews-v1": 100, "reviews-v2": 0})
    channel = env.mesh.channel("reviews")
    assert names(channel, 100) == {"reviews-v1": 100}
    env.write({"reviews-v1": 0, "reviews-v2": 100})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and names(channel, 20) != {"reviews-v2": 20}:
        time.sleep(0.05)
    assert names(channel, 200) == {"reviews-v2": 200}
    env.write({"reviews-v1": 50, "reviews-v2": 50})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(names(channel, 20)) < 2:
        time.sleep(0.05)
    split = names(channel, 2000)
    assert abs(split["reviews-v1"] / 2000 - 0.5) < 0.05, split


@pytest.mark.parametrize("target", ["reviews", "reviews.default", "reviews:50051",
                                    "reviews.default.svc.cluster.local:50051"])
def test_every_target_form(mesh_env, target):
    env = mesh_env({"reviews-v1": 1})
    assert names(env.mesh.channel(target), 5) == {"reviews-v1": 5}


def test_round_robin_over_endpoints(mesh_env):
    env = mesh_env({"reviews-v1": 3})
    get = env.mesh.channel("reviews").unary_unary(GET)
    counts = collections.Counter(get(b"", timeout=5) for _ in range(300))
    assert sorted(counts.values()) == [100, 100, 100]


def test_all_four_call_kinds_and_generated_stubs(mesh_env):
    env = mesh_env({"reviews-v1": 1})
    channel = env.mesh.channel("reviews")
    assert channel.unary_unary(GET)(b"", timeout=5) == b"reviews-v1-0"
    response, call = channel.unary_unary(GET).with_call(b"", timeout=5)
    assert response == b"reviews-v1-0" and call.code() == grpc.StatusCode.OK
    assert channel.unary_unary(GET).future(b"", timeout=5).result() == b"reviews-v1-0"
    assert list(channel.unary_stream(LIST)(b"", timeout=5)) == [
        b"reviews-v1-0:0", b"reviews-v1-0:1", b"reviews-v1-0:2"]
    assert channel.stream_unary(UPLOAD)(iter([b"a", b"b"]), timeout=5) == b"a+b@reviews-v1-0"
    assert list(channel.stream_stream(CHAT)(iter([b"x", b"y"]), timeout=5)) == [
        b"x@reviews-v1-0", b"y@reviews-v1-0"]
    stub = health_pb2_grpc.HealthStub(channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert grpc.channel_ready_future(channel).result(timeout=5) is None
    # Every call's accounting was released: nothing is left in flight.
    table = channel._target.table
    assert all(c.in_flight == 0 for c in table.clusters.values())


def test_unknown_target_fails_fast_with_clear_error(mesh_env):
    env = mesh_env({"reviews-v1": 1})
    start = time.monotonic()
    with pytest.raises(meshlib.ServiceNotFoundError) as info:
        env.mesh.channel("ratings").unary_unary(GET)(b"", timeout=5)
    assert time.monotonic() - start < 3
    assert isinstance(info.value, grpc.RpcError)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "ratings" in str(info.value)


def test_service_without_endpoints_fails_with_no_healthy_endpoint(mesh_env):
    env = mesh_env({"reviews-v1": 1}, extra=service_yaml("ratings", []))
    with pytest.raises(meshlib.NoHealthyEndpointError) as info:
        env.mesh.channel("ratings").unary_unary(GET)(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "ratings" in str(info.value)
    assert isinstance(info.value, grpc.RpcError)


def test_deadline_propagates_to_the_call(mesh_env):
    env = mesh_env({"reviews-v1": 1})
    get = env.mesh.channel("reviews").unary_unary(GET)
    get(b"", timeout=5)
    with deadline_scope(0.5):
        get(b"", timeout=30)
    backend = env.backends["reviews-v1"][0]
    assert backend.seen_timeouts[-1] is not None and backend.seen_timeouts[-1] <= 0.51


def test_fault_injection_aborts_and_delays(mesh_env):
    env = mesh_env({"reviews-v1": 1}, extra=policy_yaml("reviews", """  faultInjection:
    abort: {percent: 100, grpcStatus: RESOURCE_EXHAUSTED}
"""))
    get = env.mesh.channel("reviews").unary_unary(GET)
    with pytest.raises(grpc.RpcError) as info:
        get(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert env.backends["reviews-v1"][0].calls == 0
    env.write(extra=policy_yaml("reviews", """  faultInjection:
    delay: {percent: 100, fixedDelay: 200ms}
"""))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            start = time.monotonic()
            get(b"", timeout=5)
            if time.monotonic() - start >= 0.2:
                break
        except grpc.RpcError:
            time.sleep(0.05)
    else:
        pytest.fail("the delay fault never applied")


def test_least_request_prefers_the_fast_backend(mesh_env):
    env = mesh_env({"reviews-v1": 2}, extra=policy_yaml("reviews", """  loadBalancer:
    type: LEAST_REQUEST
"""))
    slow, fast = env.backends["reviews-v1"]
    slow.delay = 0.05
    get = env.mesh.channel("reviews").unary_unary(GET)
    get(b"", timeout=5)
    stop = time.monotonic() + 1.5

    def worker() -> None:
        for _ in range(500):
            if time.monotonic() > stop:
                return
            get(b"", timeout=5)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Round robin would split 1:1; P2C over two endpoints still draws the slow one
    # twice in a row a quarter of the time.
    assert fast.calls > 2 * slow.calls, (fast.calls, slow.calls)


def test_ring_hash_is_sticky_per_header(mesh_env):
    env = mesh_env({"reviews-v1": 3}, extra=policy_yaml("reviews", """  loadBalancer:
    type: RING_HASH
    hashHeader: x-user
"""))
    get = env.mesh.channel("reviews").unary_unary(GET)
    homes = set()
    for user in range(12):
        seen = {get(b"", timeout=5, metadata=[("x-user", f"user-{user}")]) for _ in range(10)}
        assert len(seen) == 1, (user, seen)
        homes |= seen
    assert len(homes) >= 2  # users spread over endpoints


def test_max_concurrent_requests_limits_a_cluster(mesh_env):
    env = mesh_env({"reviews-v1": 1}, extra=policy_yaml("reviews", """  circuitBreaker:
    maxConcurrentRequests: 2
"""))
    backend = env.backends["reviews-v1"][0]
    get = env.mesh.channel("reviews").unary_unary(GET)
    get(b"", timeout=5)
    backend.delay = 0.3
    futures = [get.future(b"", timeout=5) for _ in range(2)]
    with pytest.raises(meshlib.CircuitOpenError) as info:
        get(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert [f.result() for f in futures] == [b"reviews-v1-0"] * 2
    backend.delay = 0
    assert get(b"", timeout=5) == b"reviews-v1-0"


def test_a_service_added_later_becomes_callable(mesh_env):
    env = mesh_env({"reviews-v1": 1})
    get = env.mesh.channel("ratings").unary_unary(GET)
    with pytest.raises(meshlib.ServiceNotFoundError):
        get(b"", timeout=5)
    port = env.backends["reviews-v1"][0].port
    env.write(extra=service_yaml("ratings", [port]))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            assert get(b"", timeout=5) == b"reviews-v1-0"
            break
        except meshlib.ServiceNotFoundError:
            time.sleep(0.05)
    else:
        pytest.fail("ratings never became callable")


def test_endpoint_channels_are_shared_and_closed_when_the_endpoint_leaves(mesh_env):
    env = mesh_env({"reviews-v1": 2})
    first, second = env.backends["reviews-v1"]
    get = env.mesh.channel("reviews").unary_unary(GET)
    other = env.mesh.channel("reviews-v1").unary_unary(GET)
    for _ in range(4):
        get(b"", timeout=5)
        other(b"", timeout=5)
    pool = env.mesh.clients.pool
    assert pool.addresses() == {first.address, second.address}  # one channel each
    env.backends["reviews-v1"] = [first]
    env.write()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and pool.addresses() != {first.address}:
        get(b"", timeout=5)
        time.sleep(0.05)
    assert pool.addresses() == {first.address}
    assert {get(b"", timeout=5) for _ in range(10)} == {b"reviews-v1-0"}
