"""meshlib's resilience against the real control plane and real backends: retries and
their budget, circuit breaking, outlier ejection, per-try timeouts, and a control
plane that dies mid-traffic."""

from __future__ import annotations

import contextlib
import time

import grpc
import pytest

import meshlib
from tests.e2e.mesh_files import policy_yaml
from tests.e2e.meshlib_backends import GET, LIST

RETRIES = """  retries:
    attempts: 3
    retryOn: [UNAVAILABLE]
    backoff: {baseInterval: 5ms, maxInterval: 20ms}
"""


def test_retries_turn_a_flaky_backend_into_success(mesh_env):
    env = mesh_env({"reviews-v1": 2}, extra=policy_yaml("reviews", RETRIES))
    flaky, _ = env.backends["reviews-v1"]
    get = env.mesh.channel("reviews").unary_unary(GET)
    get(b"", timeout=5)
    flaky.fail_next = 10  # within the default budget: 20 % of 100 calls + 10/s
    results = [get(b"", timeout=5) for _ in range(100)]
    assert len(results) == 100  # every call succeeded
    assert flaky.fail_next == 0  # and the flaky one really failed 10 times


def test_server_streaming_is_retried_before_its_first_message(mesh_env):
    env = mesh_env({"reviews-v1": 1}, extra=policy_yaml("reviews", RETRIES))
    backend = env.backends["reviews-v1"][0]
    stream = env.mesh.channel("reviews").unary_stream(LIST)
    list(stream(b"", timeout=5))
    backend.fail_next = 2
    assert list(stream(b"", timeout=5)) == [b"reviews-v1-0:0", b"reviews-v1-0:1",
                                            b"reviews-v1-0:2"]


def test_retry_exhausted_is_an_rpc_error_with_the_last_code(mesh_env):
    env = mesh_env({"reviews-v1": 1}, extra=policy_yaml("reviews", RETRIES))
    backend = env.backends["reviews-v1"][0]
    get = env.mesh.channel("reviews").unary_unary(GET)
    get(b"", timeout=5)
    backend.fail_always = True
    with pytest.raises(meshlib.RetryExhaustedError) as info:
        get(b"", timeout=5)
    assert isinstance(info.value, grpc.RpcError)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.attempts == 3


def test_retry_budget_stops_a_retry_storm(mesh_env):
    env = mesh_env({"reviews-v1": 1}, extra=policy_yaml("reviews", """  retries:
    attempts: 5
    retryOn: [UNAVAILABLE]
    backoff: {baseInterval: 5ms, maxInterval: 5ms}
    budget: {percent: 20, minRetriesPerSecond: 1}
"""))
    backend = env.backends["reviews-v1"][0]
    get = env.mesh.channel("reviews").unary_unary(GET)
    get(b"", timeout=5)
    backend.fail_always = True
    backend.calls = 0
    start = time.monotonic()
    for _ in range(200):
        with pytest.raises(grpc.RpcError):
            get(b"", timeout=5)
    elapsed = time.monotonic() - start
    retries = backend.calls - 200
    # Without a budget: 4 retries per call = 800. With it: 20 % of requests, plus
    # 1/s, plus what a full budget window may hold at the start.
    assert retries <= 0.2 * 200 + 1 * (elapsed + 10) + 5, (retries, elapsed)
    assert retries < 200


def test_circuit_opens_after_consecutive_failures_then_half_opens(mesh_env):
    env = mesh_env({"reviews-v1": 1}, extra=policy_yaml("reviews", """  circuitBreaker:
    consecutiveFailures: 3
    openDuration: 1s
"""))
    backend = env.backends["reviews-v1"][0]
    get = env.mesh.channel("reviews").unary_unary(GET)
    get(b"", timeout=5)
    backend.fail_always = True
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as info:
            get(b"", timeout=5)
        assert not isinstance(info.value, meshlib.CircuitOpenError)
    calls = backend.calls
    with pytest.raises(meshlib.CircuitOpenError) as info:
        get(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert backend.calls == calls  # refused without a call
    backend.fail_always = False
    time.sleep(1.1)
    assert get(b"", timeout=5) == b"reviews-v1-0"  # the half-open probe succeeds
    assert all(get(b"", timeout=5) == b"reviews-v1-0" for _ in range(10))


def test_outlier_ejection_and_return(mesh_env):
    env = mesh_env({"reviews-v1": 2}, extra=policy_yaml("reviews", """  outlierDetection:
    consecutiveFailures: 2
    interval: 1s
    baseEjectionTime: 1s
    maxEjectionPercent: 50
"""))
    bad, _ = env.backends["reviews-v1"]
    get = env.mesh.channel("reviews").unary_unary(GET)
    get(b"", timeout=5)
    bad.fail_always = True
    for _ in range(10):
        with contextlib.suppress(grpc.RpcError):
            get(b"", timeout=5)
    ejected_at = bad.calls
    assert [get(b"", timeout=5) for _ in range(30)] == [b"reviews-v1-1"] * 30
    assert bad.calls == ejected_at  # ejected: no calls reach it
    bad.fail_always = False
    time.sleep(1.1)
    seen = {get(b"", timeout=5) for _ in range(20)}
    assert seen == {b"reviews-v1-0", b"reviews-v1-1"}  # back in service


def test_per_try_timeout_moves_on_to_a_fast_endpoint(mesh_env):
    env = mesh_env({"reviews-v1": 2}, extra=policy_yaml("reviews", """  retries:
    attempts: 3
    perTryTimeout: 100ms
    retryOn: [DEADLINE_EXCEEDED, UNAVAILABLE]
    backoff: {baseInterval: 5ms, maxInterval: 10ms}
"""))
    slow, _ = env.backends["reviews-v1"]
    get = env.mesh.channel("reviews").unary_unary(GET)
    get(b"", timeout=5)
    slow.delay = 1.0
    for _ in range(4):
        start = time.monotonic()
        assert get(b"", timeout=5) == b"reviews-v1-1"
        assert time.monotonic() - start < 0.6
    assert all(t is not None and t <= 0.11 for t in slow.seen_timeouts[-2:])


def test_control_plane_killed_mid_traffic_then_restarted(mesh_env, control_plane_factory):
    env = mesh_env({"reviews-v1": 1, "reviews-v2": 1}, {"reviews-v1": 100, "reviews-v2": 0})
    get = env.mesh.channel("reviews").unary_unary(GET)
    assert get(b"", timeout=5) == b"reviews-v1-0"
    env.cp.proc.kill()
    env.cp.proc.wait(timeout=5)
    failures = 0
    for _ in range(300):
        try:
            assert get(b"", timeout=5) == b"reviews-v1-0"
        except grpc.RpcError:
            failures += 1
    assert failures == 0
    env.write({"reviews-v1": 0, "reviews-v2": 100})
    control_plane_factory(env.directory, xds_port=env.cp.xds_port)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and get(b"", timeout=5) != b"reviews-v2-0":
        time.sleep(0.1)
    assert [get(b"", timeout=5) for _ in range(20)] == [b"reviews-v2-0"] * 20


def test_a_decorator_owns_retries_inside_it(mesh_env):
    env = mesh_env({"reviews-v1": 1}, extra=policy_yaml("reviews", RETRIES))
    backend = env.backends["reviews-v1"][0]
    get = env.mesh.channel("reviews").unary_unary(GET)
    get(b"", timeout=5)
    backend.fail_always = True
    backend.calls = 0

    @meshlib.retry(attempts=2, on=[grpc.StatusCode.UNAVAILABLE], backoff=0.001)
    def call() -> bytes:
        return get(b"", timeout=5)

    with pytest.raises(meshlib.RetryExhaustedError):
        call()
    assert backend.calls == 2  # 2 decorator attempts × 1 mesh attempt, not 2 × 3


def test_a_new_process_starts_from_the_cached_config_while_the_control_plane_is_down(
        mesh_env, tmp_path):
    env = mesh_env({"reviews-v1": 1})
    cache = str(tmp_path / "xds-cache.json")
    first = env.new_mesh(node_id="cached-1", cache_path=cache)
    assert first.channel("reviews").unary_unary(GET)(b"", timeout=5) == b"reviews-v1-0"
    first.close()
    env.cp.proc.kill()
    env.cp.proc.wait(timeout=5)
    second = env.new_mesh(node_id="cached-2", cache_path=cache)
    start = time.monotonic()
    get = second.channel("reviews").unary_unary(GET)
    assert [get(b"", timeout=5) for _ in range(20)] == [b"reviews-v1-0"] * 20
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
def test_both_ads_protocols_route_the_same(mesh_env, protocol):
    env = mesh_env({"reviews-v1": 1, "reviews-v2": 1}, {"reviews-v1": 0, "reviews-v2": 100})
    mesh = env.new_mesh(node_id=f"proto-{protocol}", xds_protocol=protocol)
    get = mesh.channel("reviews").unary_unary(GET)
    assert [get(b"", timeout=5) for _ in range(10)] == [b"reviews-v2-0"] * 10
    env.write({"reviews-v1": 100, "reviews-v2": 0})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and get(b"", timeout=5) != b"reviews-v1-0":
        time.sleep(0.05)
    assert [get(b"", timeout=5) for _ in range(10)] == [b"reviews-v1-0"] * 10
