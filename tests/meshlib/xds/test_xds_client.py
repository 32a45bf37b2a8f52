"""XdsClient without a control plane: backoff, reference-counted subscriptions, the
public API."""

from __future__ import annotations

import asyncio

import pytest

import meshlib.xds
from meshlib.xds import (
    CLUSTER,
    LISTENER,
    Backoff,
    WatcherFuncs,
    XdsClient,
    XdsClientConfig,
)
from tests.meshlib.xds.xds_watchers import Recorder


def test_backoff_doubles_from_base_to_cap_without_jitter():
    backoff = Backoff(random=lambda: 0.5)
    delays = [backoff(n) for n in range(12)]
    assert delays[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert delays[-1] == 30.0
    assert max(delays) == 30.0
    assert backoff(10_000) == 30.0  # no overflow


def test_backoff_jitter_spreads_by_a_fifth_and_never_exceeds_cap():
    low, high = Backoff(random=lambda: 0.0), Backoff(random=lambda: 0.999999)
    assert low(0) == pytest.approx(0.08)
    assert high(0) == pytest.approx(0.12)
    assert high(20) == 30.0
    assert low(20) == pytest.approx(24.0)


def test_backoff_rejects_nonsense():
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(base=2, cap=1)
    with pytest.raises(ValueError):
        Backoff(jitter=1.5)


async def test_reconnect_attempts_follow_the_backoff_sequence():
    """Nothing listens on the port: every stream fails, and the client sleeps
    base, 2·base, 4·base … between attempts, with the injected random."""
    slept: list[float] = []
    four = asyncio.Event()

    async def sleep(delay: float) -> None:
        slept.append(delay)
        if len(slept) == 4:
            four.set()
            await asyncio.Event().wait()  # park the loop until close()

    config = XdsClientConfig(server_address="127.0.0.1:1", node_id="n1")
    client = XdsClient(config, backoff=Backoff(base=0.5, cap=3.0, random=lambda: 0.0),
                       sleep=sleep)
    watcher = Recorder()
    client.watch(LISTENER, "reviews", watcher)
    async with client:
        await asyncio.wait_for(four.wait(), 5)
    assert slept == pytest.approx([0.4, 0.8, 1.6, 2.4])
    # Once per outage, not once per attempt; no value yet, so not an ambient error.
    assert watcher.log == ["error"]
    assert "UNAVAILABLE" in str(watcher.errors[0])


def test_subscriptions_are_reference_counted():
    client = XdsClient(XdsClientConfig(server_address="unused:1", node_id="n1"))
    first, second = Recorder(), Recorder()
    cancel_first = client.watch(LISTENER, "reviews", first)
    cancel_second = client.watch(LISTENER, "reviews", second)
    cancel_other = client.watch(LISTENER, "ratings", WatcherFuncs())
    assert client.subscriptions(LISTENER) == {"reviews", "ratings"}
    cancel_first()
    cancel_first()  # idempotent: must not drop the second watcher's reference
    assert client.subscriptions(LISTENER) == {"reviews", "ratings"}
    cancel_second()
    assert client.subscriptions(LISTENER) == {"ratings"}
    cancel_other()
    assert client.subscriptions(LISTENER) == frozenset()
    assert client.subscriptions(CLUSTER) == frozenset()


def test_watch_of_unknown_type_is_refused():
    client = XdsClient(XdsClientConfig(server_address="unused:1", node_id="n1"))
    with pytest.raises(ValueError):
        client.watch("type.googleapis.com/nope.Nope", "x", WatcherFuncs())
    assert client._watchers == {}


def test_node_carries_meshlib_kind_and_namespace():
    node = XdsClientConfig(server_address="x:1", node_id="n1", namespace="shop").node()
    assert node.id == "n1"
    assert node.metadata.fields["MESHLIB_KIND"].string_value == "meshlib"
    assert node.metadata.fields["NAMESPACE"].string_value == "shop"


def test_public_api_is_pinned():
    assert meshlib.xds.__all__ == [
        "CLUSTER", "DECODERS", "DEFAULT_CACHE_WRITE_INTERVAL", "DEFAULT_PROTOCOL",
        "DEFAULT_RESOURCE_TIMEOUT", "ENDPOINT", "LISTENER", "ROUTE",
        "AdsClientProtocol", "Backoff", "CachedResource", "ChannelTls", "CircuitBreakerConfig",
        "ClusterUpdate", "ClusterWeight",
        "Decoder", "DeltaAdsClientProtocol", "Endpoint", "EndpointsUpdate", "Event",
        "FaultConfig", "HashPolicy", "HeaderMatcher", "LbPolicy", "ListenerUpdate",
        "Locality", "OutlierDetectionConfig", "QueryParameterMatcher", "ResourceChanged",
        "ResourceError", "ResourceRemoved", "ResourceValidationError", "ResourceWatcher",
        "RetryBudgetConfig", "RetryPolicy", "Route", "RouteAction", "RouteConfigUpdate",
        "RouteMatch",
        "ServerListenerUpdate", "StringMatcher", "Update", "VirtualHost", "WatcherFuncs",
        "XdsClient", "XdsClientConfig", "XdsProtocol", "decode_cluster", "decode_endpoints",
        "decode_listener", "decode_route_config", "match_route", "pick_virtual_host",
    ]
    for name in meshlib.xds.__all__:
        assert hasattr(meshlib.xds, name)
