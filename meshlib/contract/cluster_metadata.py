"""The ``meshlib.dev`` filter metadata of a Cluster: what xDS has no field for.

The control plane writes it into ``Cluster.metadata.filter_metadata["meshlib.dev"]``
with :func:`encode`; gRPC and Envoy ignore it; meshlib reads it with :func:`decode`.
The schema, camelCase on the wire as in the CRDs::

    circuitBreaker:  {consecutiveFailures: 5, openDuration: 30, halfOpenProbes: 1}
    retryBudget:     {percent: 20, minRetriesPerSecond: 10}

* ``circuitBreaker``: the per-endpoint breaker meshlib enforces (open after
  ``consecutiveFailures`` >= 1, for ``openDuration`` >= 0 seconds, then let
  ``halfOpenProbes`` >= 1 calls test the endpoint);
* ``retryBudget``: retries may add ``percent`` >= 0 % of the requests, plus
  ``minRetriesPerSecond`` >= 0.

A missing section means the feature is off; a missing key takes its default
(:mod:`meshlib.contract.defaults`). Unknown sections and keys are ignored, so a newer
control plane may add some.

Example::

    settings = ClusterMetadata(retry_budget=RetryBudgetConfig(percent=10.0))
    cluster.metadata.filter_metadata[MESHLIB_METADATA].update(encode(settings))
    assert decode(cluster.metadata.filter_metadata[MESHLIB_METADATA]) == settings
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshlib.contract.defaults import (
    DEFAULT_BREAKER_FAILURES,
    DEFAULT_BREAKER_HALF_OPEN_PROBES,
    DEFAULT_BREAKER_OPEN_DURATION,
    DEFAULT_MIN_RETRIES_PER_SECOND,
    DEFAULT_RETRY_BUDGET_PERCENT,
)

if TYPE_CHECKING:
    from google.protobuf import struct_pb2

__all__ = [
    "MESHLIB_METADATA",
    "CircuitBreakerConfig",
    "ClusterMetadata",
    "RetryBudgetConfig",
    "decode",
    "encode",
]

MESHLIB_METADATA = "meshlib.dev"  # the filter_metadata key


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitBreakerConfig:
    """Per-endpoint breaker: open after ``consecutive_failures``, for ``open_duration`` s,
    then let ``half_open_probes`` calls test the endpoint."""

    consecutive_failures: int = DEFAULT_BREAKER_FAILURES
    open_duration: float = DEFAULT_BREAKER_OPEN_DURATION
    half_open_probes: int = DEFAULT_BREAKER_HALF_OPEN_PROBES


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudgetConfig:
    """Retries allowed: ``percent`` % of requests plus ``min_retries_per_second``."""

    percent: float = DEFAULT_RETRY_BUDGET_PERCENT
    min_retries_per_second: float = DEFAULT_MIN_RETRIES_PER_SECOND


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterMetadata:
    """The settings of one Cluster's ``meshlib.dev`` metadata; None: that section is
    absent (the feature is off)."""

    circuit_breaker: CircuitBreakerConfig | None = None
    retry_budget: RetryBudgetConfig | None = None


@dataclass(frozen=True, slots=True)
class _Key:
    wire: str  # the key in the Struct
    attribute: str  # the dataclass field
    minimum: int | float  # an int minimum: the value is a whole number


@dataclass(frozen=True, slots=True)
class _Section:
    wire: str
    attribute: str
    cls: type[Any]
    keys: tuple[_Key, ...]


_SECTIONS = (
    _Section("circuitBreaker", "circuit_breaker", CircuitBreakerConfig, (
        _Key("consecutiveFailures", "consecutive_failures", 1),
        _Key("openDuration", "open_duration", 0.0),
        _Key("halfOpenProbes", "half_open_probes", 1),
    )),
    _Section("retryBudget", "retry_budget", RetryBudgetConfig, (
        _Key("percent", "percent", 0.0),
        _Key("minRetriesPerSecond", "min_retries_per_second", 0.0),
    )),
)


def encode(metadata: ClusterMetadata) -> dict[str, dict[str, float]]:
    """``metadata`` as the dict to ``Struct.update`` the ``meshlib.dev`` entry with;
    ``{}`` when there is nothing to say (then leave the entry out)."""
    out: dict[str, dict[str, float]] = {}
    for section in _SECTIONS:
        value = getattr(metadata, section.attribute)
        if value is not None:
            out[section.wire] = {key.wire: getattr(value, key.attribute)
                                 for key in section.keys}
    return out


def decode(struct: struct_pb2.Struct) -> ClusterMetadata:
    """The settings in a ``meshlib.dev`` metadata Struct.

    Raises ValueError naming the field, e.g. ``meshlib.dev.circuitBreaker
    .consecutiveFailures: 0.0 < 1``, for a section that is not a struct or a value
    that is not a number or is below its minimum.
    """
    found: dict[str, Any] = {}
    for section in _SECTIONS:
        if section.wire not in struct.fields:
            continue
        value = struct.fields[section.wire]
        where = f"{MESHLIB_METADATA}.{section.wire}"
        if value.WhichOneof("kind") != "struct_value":
            raise ValueError(f"{where}: expected a struct, got {value.WhichOneof('kind')}")
        fields = value.struct_value.fields
        settings: dict[str, float] = {}
        for key in section.keys:
            if key.wire in fields:
                settings[key.attribute] = _number(fields[key.wire], key, f"{where}.{key.wire}")
        found[section.attribute] = section.cls(**settings)
    return ClusterMetadata(**found)


def _number(value: struct_pb2.Value, key: _Key, where: str) -> float:
    if value.WhichOneof("kind") != "number_value":
        raise ValueError(f"{where}: expected a number, got {value.WhichOneof('kind')}")
    number = value.number_value
    if not number >= key.minimum:  # NaN too
        raise ValueError(f"{where}: {number} < {key.minimum}")
    if isinstance(key.minimum, int):
        if not math.isfinite(number):
            raise ValueError(f"{where}: {number} is not a whole number")
        return int(number)
    return number
