"""Small proto helpers shared by the builders: durations, ``Any``, percents, filters."""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, message

from xds_server.translate.names import FAULT_FILTER, ROUTER_FILTER

__all__ = [
    "ads_config_source",
    "duration",
    "fault_filter",
    "pack",
    "percent",
    "router_filter",
]


def duration(seconds: float) -> duration_pb2.Duration:
    """A ``Duration`` of ``seconds``, rounded to the microsecond (no float noise)."""
    micros = round(seconds * 1_000_000)
    return duration_pb2.Duration(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def pack(msg: message.Message) -> any_pb2.Any:
    """``msg`` in an ``Any`` with the standard ``type.googleapis.com/`` prefix."""
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def percent(value: float) -> percent_pb2.FractionalPercent:
    """``value`` percent: per HUNDRED when whole, else per MILLION to keep fractions."""
    fp = percent_pb2.FractionalPercent
    if float(value).is_integer():
        return fp(numerator=int(value), denominator=fp.HUNDRED)
    return fp(numerator=round(value * 10_000), denominator=fp.MILLION)


def ads_config_source() -> config_source_pb2.ConfigSource:
    """``{ads: {}, resource_api_version: V3}``: fetch over the same ADS stream."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def router_filter() -> hcm_pb2.HttpFilter:
    """The router, always with its ``typed_config``: gRPC NACKs an HCM without it."""
    return hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router()))


def fault_filter() -> hcm_pb2.HttpFilter:
    """An empty fault filter; routes switch it on with ``typed_per_filter_config`` (A33)."""
    return hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault()))
