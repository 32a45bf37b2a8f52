"""ClusterState: endpoint updates keep state, outlier ejection with a fake clock,
max-ejection percent, max concurrent requests."""

from __future__ import annotations

import grpc
import pytest

from meshlib._cluster_state import ClusterState, service_of
from meshlib.errors import CircuitOpenError, NoHealthyEndpointError
from meshlib.xds import ClusterUpdate, Endpoint, OutlierDetectionConfig

NAME = "outbound|50051||reviews.default.svc.cluster.local"
FAIL = grpc.StatusCode.UNAVAILABLE


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cluster(n: int = 2, clock: Clock | None = None, **od: object) -> ClusterState:
    state = ClusterState(NAME, clock=clock or Clock())
    outlier = OutlierDetectionConfig(consecutive_5xx=2, base_ejection_time=10.0,
                                     max_ejection_time=25.0, max_ejection_percent=50,
                                     **od) if od is not None else None
    state.set_config(ClusterUpdate(name=NAME, eds_service_name=NAME,
                                   outlier_detection=outlier))
    state.set_endpoints([Endpoint(address="10.0.0.1", port=80 + i) for i in range(n)])
    return state


def fail(state: ClusterState, address: str, times: int) -> None:
    endpoint = state.endpoints[address]
    for _ in range(times):
        state.in_flight += 1
        endpoint.active += 1
        state.release(endpoint, FAIL)


def test_service_name_from_cluster_name():
    assert service_of(NAME) == "reviews.default:50051"
    assert service_of("plain") == "plain"


def test_consecutive_failures_eject_then_the_endpoint_returns():
    clock = Clock()
    state = cluster(clock=clock)
    fail(state, "10.0.0.1:80", 2)
    assert {state.pick().address for _ in range(10)} == {"10.0.0.1:81"}
    clock.now += 10.1
    assert {state.pick().address for _ in range(10)} == {"10.0.0.1:80", "10.0.0.1:81"}


def test_ejection_time_grows_and_is_capped():
    clock = Clock()
    state = cluster(clock=clock)
    endpoint = state.endpoints["10.0.0.1:80"]
    fail(state, endpoint.address, 2)
    assert endpoint.ejected_until == pytest.approx(110.0)
    clock.now += 10.5
    state.pick()  # returns it
    fail(state, endpoint.address, 2)
    assert endpoint.ejected_until - clock.now == pytest.approx(20.0)  # 2 × base
    clock.now += 20.5
    state.pick()
    fail(state, endpoint.address, 2)
    assert endpoint.ejected_until - clock.now == pytest.approx(25.0)  # capped at max


def test_max_ejection_percent_keeps_endpoints_in_service():
    state = cluster(n=2)
    fail(state, "10.0.0.1:80", 2)
    fail(state, "10.0.0.1:81", 5)  # 50 % already ejected: not ejected
    assert {state.pick().address for _ in range(4)} == {"10.0.0.1:81"}


def test_success_resets_consecutive_failures():
    state = cluster()
    endpoint = state.endpoints["10.0.0.1:80"]
    fail(state, endpoint.address, 1)
    state.in_flight += 1
    state.release(endpoint, None)
    fail(state, endpoint.address, 1)
    assert not endpoint.ejected_until


def test_endpoint_updates_keep_the_state_of_those_that_stay():
    state = cluster()
    kept = state.endpoints["10.0.0.1:80"]
    kept.consecutive_failures = 1
    state.set_endpoints([Endpoint(address="10.0.0.1", port=80),
                         Endpoint(address="10.0.0.1", port=99),
                         Endpoint(address="10.0.0.1", port=98, health="UNHEALTHY")])
    assert state.endpoints["10.0.0.1:80"] is kept
    assert set(state.endpoints) == {"10.0.0.1:80", "10.0.0.1:99"}


def test_no_endpoint_names_the_service():
    state = ClusterState(NAME)
    with pytest.raises(NoHealthyEndpointError, match=r"reviews.default:50051.*no endpoints"):
        state.pick()
    state.set_endpoints([])
    with pytest.raises(NoHealthyEndpointError) as info:
        state.pick()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_max_requests_refuses_over_the_limit_and_counts_back_down():
    state = cluster(n=1)
    state.max_requests = 2
    first, second = state.pick(), state.pick()
    with pytest.raises(CircuitOpenError, match="limit"):
        state.pick()
    state.release(first, None)
    state.release(second, None)
    assert state.in_flight == 0 and state.pick()


def test_cancelled_calls_neither_count_nor_forgive():
    state = cluster()
    endpoint = state.endpoints["10.0.0.1:80"]
    for code in (FAIL, grpc.StatusCode.CANCELLED):
        state.in_flight += 1
        endpoint.active += 1
        state.release(endpoint, code)
    assert endpoint.consecutive_failures == 1
    fail(state, endpoint.address, 1)
    assert endpoint.ejected_until  # two real failures in a row: ejected
    assert state.in_flight == 0 and endpoint.active == 0
