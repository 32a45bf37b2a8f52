"""The one call pipeline (meshlib._pipeline.Call) driven with no sockets: a fake
clock, attempts that fail or succeed as told, and the decisions checked — picks,
releases, retry waits, the budget, deadlines, faults, telemetry."""

from __future__ import annotations

import grpc
import pytest

from meshlib._cluster_state import ClusterState
from meshlib._pipeline import Call, code_name
from meshlib._route_table import RouteTable
from meshlib.errors import (
    CallError,
    CircuitOpenError,
    DeadlineExceededError,
    NoHealthyEndpointError,
    RetryExhaustedError,
)
from meshlib.resilience import RETRIES_OWNED, deadline_scope
from meshlib.xds import (
    ClusterUpdate,
    ClusterWeight,
    Endpoint,
    FaultConfig,
    Route,
    RouteAction,
    RouteMatch,
    VirtualHost,
)
from meshlib.xds import RetryPolicy as XdsRetryPolicy

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
NAME = "outbound|50051||reviews.default.svc.cluster.local"
METHOD = "/demo.Reviews/Get"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def world(*, retry: XdsRetryPolicy | None = None, timeout: float | None = None,
          fault: FaultConfig | None = None, endpoints: int = 2,
          clock: Clock | None = None) -> tuple[RouteTable, ClusterState, Clock]:
    clock = clock or Clock()
    cluster = ClusterState(NAME, clock=clock)
    cluster.set_config(ClusterUpdate(name=NAME, eds_service_name=NAME))
    cluster.set_endpoints([Endpoint(address="10.0.0.1", port=80 + i)
                           for i in range(endpoints)])
    action = RouteAction(clusters=(ClusterWeight(name=NAME, weight=1),), total_weight=1,
                         timeout=timeout, retry_policy=retry)
    route = Route(name="default", match=RouteMatch(prefix=""), action=action, fault=fault)
    vhost = VirtualHost(name="reviews", domains=("reviews",), routes=(route,))
    return RouteTable.build("reviews", vhost, {NAME: cluster}), cluster, clock


def failure(code: grpc.StatusCode = UNAVAILABLE) -> CallError:
    return CallError("attempt failed", code=code)


class Recorder:
    """A ClientTelemetry stand-in: what the pipeline tells telemetry, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def start(self, *args: object) -> Recorder:
        self.events.append(("start", args[0], args[3]))
        return self

    def attempt(self, endpoint: object) -> tuple:
        self.events.append(("attempt",))
        return (("traceparent", "00-x"),)

    def attempt_end(self, code: str, error: bool) -> None:
        self.events.append(("attempt_end", code, error))

    def finish(self, code: str, error: bool, **sizes: object) -> None:
        self.events.append(("finish", code, error))


def run(call: Call, outcomes: list[BaseException | None]) -> tuple[list[float], object]:
    """A driver's loop with recorded sleeps: each attempt ends as ``outcomes`` says."""
    waits: list[float] = []
    for outcome in outcomes:
        endpoint = call.pick()
        if outcome is None:
            call.succeeded(endpoint)
            return waits, "ok"
        wait = call.failed_rpc(endpoint, outcome)  # type: ignore[arg-type]
        if wait is None:
            return waits, call.final(outcome)
        waits.append(wait)
    raise AssertionError("more attempts than outcomes")


def test_a_successful_call_picks_once_and_releases():
    table, cluster, clock = world()
    call = Call(table, METHOD, None, 2.0, None, METHOD, clock=clock)
    assert call.delay == 0.0 and call.aborted is None
    endpoint = call.pick()
    assert call.attempt_timeout == 2.0
    assert call.deadline is None  # one attempt: no retries share a deadline
    assert cluster.in_flight == 1 and endpoint.active == 1
    call.succeeded(endpoint)
    assert cluster.in_flight == 0 and endpoint.active == 0
    assert call.run is None  # no retry engine on the success path


def test_retries_follow_the_route_policy_until_success():
    policy = XdsRetryPolicy(retry_on=frozenset({UNAVAILABLE}), num_retries=2,
                            base_interval=0.1, max_interval=1.0)
    table, cluster, clock = world(retry=policy)
    call = Call(table, METHOD, None, None, None, METHOD, clock=clock)
    waits, result = run(call, [failure(), failure(), None])
    assert result == "ok" and len(waits) == 2
    assert 0 <= waits[0] <= 0.1 and 0 <= waits[1] <= 0.2  # full jitter, doubling
    assert cluster.in_flight == 0
    assert sum(cluster.budget._retries) == 2  # spent from the cluster's budget


def test_exhausted_retries_raise_the_last_code_as_retry_exhausted():
    policy = XdsRetryPolicy(retry_on=frozenset({UNAVAILABLE}), num_retries=1)
    table, _, clock = world(retry=policy)
    call = Call(table, METHOD, None, None, None, METHOD, clock=clock)
    _, error = run(call, [failure(), failure()])
    assert isinstance(error, RetryExhaustedError)
    assert error.code() == UNAVAILABLE and error.attempts == 2


def test_a_non_retryable_code_ends_the_call_with_itself():
    policy = XdsRetryPolicy(retry_on=frozenset({UNAVAILABLE}), num_retries=3)
    table, _, clock = world(retry=policy)
    call = Call(table, METHOD, None, None, None, METHOD, clock=clock)
    last = failure(grpc.StatusCode.INTERNAL)
    _, error = run(call, [failure(), last])
    assert error is last


def test_meshlibs_own_refusals_are_never_retried():
    policy = XdsRetryPolicy(retry_on=frozenset({UNAVAILABLE}), num_retries=3)
    table, _, clock = world(retry=policy)
    call = Call(table, METHOD, None, None, None, METHOD, clock=clock)
    for refusal in (CircuitOpenError("open"), NoHealthyEndpointError("none")):
        endpoint = call.pick()
        assert call.failed_rpc(endpoint, refusal) is None


def test_no_retry_wait_runs_past_the_deadline():
    policy = XdsRetryPolicy(retry_on=frozenset({UNAVAILABLE}), num_retries=5,
                            base_interval=10.0, max_interval=10.0)
    table, _, clock = world(retry=policy)
    call = Call(table, METHOD, None, 0.5, None, METHOD, clock=clock)
    waits, error = run(call, [failure()] * 6)
    assert all(w < 0.5 for w in waits)  # a 10 s-scale wait would end past the deadline
    assert isinstance(error, CallError)


def test_the_budget_refuses_retries_beyond_its_share():
    policy = XdsRetryPolicy(retry_on=frozenset({UNAVAILABLE}), num_retries=1)
    table, cluster, clock = world(retry=policy)
    from meshlib.resilience import RetryBudget

    cluster.budget = RetryBudget(percent=0, min_retries_per_second=0, clock=clock)
    call = Call(table, METHOD, None, None, None, METHOD, clock=clock)
    first = failure()
    _, error = run(call, [first])
    assert error is first  # cut short by the budget: the error itself


def test_per_try_timeout_caps_each_attempt_by_the_deadline():
    policy = XdsRetryPolicy(retry_on=frozenset({UNAVAILABLE}), num_retries=3,
                            per_try_timeout=0.3)
    table, _, clock = world(retry=policy)
    call = Call(table, METHOD, None, 1.0, None, METHOD, clock=clock)
    endpoint = call.pick()
    assert call.attempt_timeout == 0.3
    assert call.failed_rpc(endpoint, failure()) is not None
    clock.now += 0.8  # 0.2 s left of the call
    endpoint = call.pick()
    assert call.attempt_timeout == pytest.approx(0.2)
    assert call.failed_rpc(endpoint, failure()) is not None
    clock.now += 1.0
    call.pick()
    assert call.attempt_timeout == 0.0  # grpc fails it DEADLINE_EXCEEDED at once


def test_inside_a_retry_decorator_the_channel_makes_one_attempt():
    policy = XdsRetryPolicy(retry_on=frozenset({UNAVAILABLE}), num_retries=3)
    table, _, clock = world(retry=policy)
    token = RETRIES_OWNED.set(True)
    try:
        call = Call(table, METHOD, None, None, None, METHOD, clock=clock)
    finally:
        RETRIES_OWNED.reset(token)
    first = failure()
    assert run(call, [first])[1] is first


def test_timeouts_take_the_smallest_of_caller_route_and_propagated_deadline():
    table, _, clock = world(timeout=3.0)
    def timeout(given: float) -> float | None:
        return Call(table, METHOD, None, given, None, METHOD, clock=clock).timeout

    assert timeout(5.0) == 3.0
    assert timeout(1.0) == 1.0
    with deadline_scope(0.5, now=clock.now):
        assert timeout(1.0) == pytest.approx(0.5)
    with deadline_scope(0.5, now=clock.now - 1.0), pytest.raises(DeadlineExceededError):
        timeout(1.0)


def test_faults_delay_then_abort_without_touching_the_cluster():
    fault = FaultConfig(delay=0.2, delay_percent=100, abort_grpc_status=UNAVAILABLE,
                        abort_percent=100)
    table, cluster, clock = world(fault=fault)
    call = Call(table, METHOD, None, 1.0, None, METHOD, clock=clock)
    assert call.delay == 0.2
    call.start()
    assert isinstance(call.aborted, CallError) and call.aborted.code() == UNAVAILABLE
    assert call.timeout == pytest.approx(0.8)
    assert cluster.budget._count == 0  # an aborted call never reached the cluster
    short = Call(table, METHOD, None, 0.1, None, METHOD, clock=clock)
    assert short.delay == 0.1  # the deadline fires during the delay, not after it
    with pytest.raises(DeadlineExceededError, match="delay"):
        short.start()


def test_no_matching_route_is_unavailable():
    clock = Clock()
    empty = RouteTable.build("reviews", VirtualHost(name="r", domains=("r",), routes=()), {})
    with pytest.raises(CallError) as info:
        Call(empty, METHOD, None, None, None, METHOD, clock=clock)
    assert info.value.code() == UNAVAILABLE


def test_telemetry_sees_each_attempt_and_one_finish():
    policy = XdsRetryPolicy(retry_on=frozenset({UNAVAILABLE}), num_retries=1)
    table, _, clock = world(retry=policy)
    recorder = Recorder()
    call = Call(table, METHOD, (("x-user", "1"),), None, recorder,  # type: ignore[arg-type]
                METHOD, clock=clock)
    endpoint = call.pick()
    assert call.attempt_headers == (("traceparent", "00-x"),)
    call.failed_rpc(endpoint, failure())
    endpoint = call.pick()
    call.succeeded(endpoint)
    assert recorder.events == [
        ("start", "reviews", METHOD), ("attempt",), ("attempt_end", "UNAVAILABLE", True),
        ("attempt",), ("attempt_end", "OK", False), ("finish", "OK", False)]


def test_without_telemetry_attempts_send_the_calls_metadata():
    table, _, clock = world()
    metadata = (("x-user", "1"),)
    call = Call(table, METHOD, metadata, None, None, METHOD, clock=clock)
    call.pick()
    assert call.attempt_headers is metadata


def test_streams_end_once_per_attempt_and_release():
    table, cluster, clock = world()
    recorder = Recorder()
    call = Call(table, METHOD, None, None, recorder, METHOD,  # type: ignore[arg-type]
                clock=clock, retry=False)
    ended: list = []

    class Rpc:
        def add_done_callback(self, fn):  # type: ignore[no-untyped-def]
            ended.append(fn)

    call.open(lambda endpoint: Rpc(), lambda c, e, rpc: lambda _: c.stream_ended(
        e, grpc.StatusCode.OK))
    assert cluster.in_flight == 1
    ended[0](None)
    assert cluster.in_flight == 0
    assert recorder.events[-2:] == [("attempt_end", "OK", False), ("finish", "OK", False)]


def test_a_stream_that_cannot_start_is_released_at_once():
    table, cluster, clock = world()
    call = Call(table, METHOD, None, None, None, METHOD, clock=clock, retry=False)

    def broken(endpoint: object) -> object:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        call.open(broken, lambda c, e, rpc: lambda _: None)
    assert cluster.in_flight == 0


def test_code_names():
    assert code_name(None) == "OK"
    assert code_name(failure()) == "UNAVAILABLE"
    assert code_name(KeyboardInterrupt()) == "CANCELLED"


def test_a_stream_refused_before_it_starts_is_recorded():
    table, _, clock = world(endpoints=0)
    recorder = Recorder()
    call = Call(table, METHOD, None, None, recorder, METHOD,  # type: ignore[arg-type]
                clock=clock, retry=False)
    with pytest.raises(NoHealthyEndpointError):
        call.open(lambda endpoint: None, lambda c, e, rpc: lambda _: None)
    assert recorder.events[-1] == ("finish", "UNAVAILABLE", True)
