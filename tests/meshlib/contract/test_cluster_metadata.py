"""The ``meshlib.dev`` Cluster metadata: one schema, encoded by the control plane and
decoded by meshlib."""

from __future__ import annotations

import math

import pytest
from google.protobuf import any_pb2, struct_pb2

from meshlib.contract import (
    MESHLIB_METADATA,
    CircuitBreakerConfig,
    ClusterMetadata,
    RetryBudgetConfig,
)
from meshlib.contract.cluster_metadata import decode, encode
from meshlib.xds import ResourceValidationError, decode_cluster
from tests.xds_server.translate.model_builders import mesh, policy, service
from xds_server.model import CircuitBreaker, RetryBudget, RetryPolicy
from xds_server.translate.clusters import build_cluster


def _struct(value: dict) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


@pytest.mark.parametrize("metadata", [
    ClusterMetadata(),
    ClusterMetadata(circuit_breaker=CircuitBreakerConfig()),
    ClusterMetadata(retry_budget=RetryBudgetConfig()),
    ClusterMetadata(
        circuit_breaker=CircuitBreakerConfig(consecutive_failures=3, open_duration=2.5,
                                             half_open_probes=2),
        retry_budget=RetryBudgetConfig(percent=12.5, min_retries_per_second=0.0)),
])
def test_round_trip(metadata):
    assert decode(_struct(encode(metadata))) == metadata


def test_nothing_to_say_encodes_to_nothing():
    assert encode(ClusterMetadata()) == {}


def test_the_wire_schema_is_camel_case():
    encoded = encode(ClusterMetadata(circuit_breaker=CircuitBreakerConfig(),
                                     retry_budget=RetryBudgetConfig()))
    assert encoded == {
        "circuitBreaker": {"consecutiveFailures": 5, "openDuration": 30.0,
                           "halfOpenProbes": 1},
        "retryBudget": {"percent": 20.0, "minRetriesPerSecond": 10.0},
    }


def test_missing_keys_take_the_defaults_and_unknown_ones_are_ignored():
    decoded = decode(_struct({"circuitBreaker": {"openDuration": 5, "future": 1},
                              "retryBudget": {}, "somethingNew": {"x": 1}}))
    assert decoded == ClusterMetadata(circuit_breaker=CircuitBreakerConfig(open_duration=5.0),
                                      retry_budget=RetryBudgetConfig())
    assert isinstance(decoded.circuit_breaker.consecutive_failures, int)


@pytest.mark.parametrize(("value", "error"), [
    ({"circuitBreaker": {"consecutiveFailures": 0}},
     r"^meshlib\.dev\.circuitBreaker\.consecutiveFailures: 0\.0 < 1$"),
    ({"circuitBreaker": {"halfOpenProbes": math.nan}},
     r"^meshlib\.dev\.circuitBreaker\.halfOpenProbes: nan < 1$"),
    ({"circuitBreaker": {"consecutiveFailures": math.inf}},
     r"^meshlib\.dev\.circuitBreaker\.consecutiveFailures: inf is not a whole number$"),
    ({"circuitBreaker": {"openDuration": -1}},
     r"^meshlib\.dev\.circuitBreaker\.openDuration: -1\.0 < 0\.0$"),
    ({"retryBudget": {"percent": "20"}},
     r"^meshlib\.dev\.retryBudget\.percent: expected a number, got string_value$"),
    ({"retryBudget": {"minRetriesPerSecond": -0.5}},
     r"^meshlib\.dev\.retryBudget\.minRetriesPerSecond: -0\.5 < 0\.0$"),
    ({"retryBudget": 20}, r"^meshlib\.dev\.retryBudget: expected a struct, got number_value$"),
])
def test_invalid_values_name_the_field(value, error):
    with pytest.raises(ValueError, match=error):
        decode(_struct(value))


def _translated_cluster():
    """The Cluster the control plane builds for a TrafficPolicy with both sections."""
    model = mesh(service("reviews", grpc=50051), policy(
        "reviews",
        retries=RetryPolicy(budget=RetryBudget(percent=12.5, min_retries_per_second=3)),
        circuit_breaker=CircuitBreaker(consecutive_failures=4, open_duration=7.5,
                                       half_open_probes=2)))
    return build_cluster(model, model.services[0], model.services[0].ports[0])


def _packed(message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def test_what_the_translator_writes_meshlib_reads():
    breaker = CircuitBreakerConfig(consecutive_failures=4, open_duration=7.5,
                                   half_open_probes=2)
    budget = RetryBudgetConfig(percent=12.5, min_retries_per_second=3.0)
    cluster = _translated_cluster()
    assert decode(cluster.metadata.filter_metadata[MESHLIB_METADATA]) == ClusterMetadata(
        circuit_breaker=breaker, retry_budget=budget)
    update = decode_cluster(_packed(cluster))
    assert (update.circuit_breaker, update.retry_budget) == (breaker, budget)


def test_meshlib_nacks_invalid_metadata_naming_the_field():
    cluster = _translated_cluster()
    cluster.metadata.filter_metadata[MESHLIB_METADATA].update(
        {"circuitBreaker": {"consecutiveFailures": 0}})
    with pytest.raises(ResourceValidationError, match=(
            r"metadata meshlib\.dev\.circuitBreaker\.consecutiveFailures: 0\.0 < 1$")):
        decode_cluster(_packed(cluster))
