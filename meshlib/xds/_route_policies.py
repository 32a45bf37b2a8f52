"""Per-route policies: retries (gRFC A44), fault injection (gRFC A33) and hash policies.

* https://github.com/grpc/proposal/blob/master/A44-xds-retry.md — ``retry_on`` names
  gRPC status codes (``unavailable,deadline-exceeded``); other Envoy conditions
  (``5xx``, ``reset``) are ignored. ``num_retries`` defaults to 1, ``base_interval``
  to 25 ms and ``max_interval`` to 10 × ``base_interval``.
* https://github.com/grpc/proposal/blob/master/A33-Fault-Injection.md — a fixed delay
  and/or an abort, each on a percentage; header-driven faults are not supported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from google.protobuf import any_pb2

from meshlib.xds._resources import ROUTE, ResourceValidationError, fraction_percent, seconds

__all__ = [
    "DEFAULT_RETRY_BASE_INTERVAL",
    "FAULT_FILTER_TYPE",
    "FaultConfig",
    "HashPolicy",
    "RetryPolicy",
    "decode_fault",
    "decode_hash_policy",
    "decode_retry_policy",
]

DEFAULT_RETRY_BASE_INTERVAL = 0.025
FAULT_FILTER_TYPE = "type.googleapis.com/" + fault_pb2.HTTPFault.DESCRIPTOR.full_name
_FILTER_CONFIG_TYPE = "type.googleapis.com/" + rc_pb2.FilterConfig.DESCRIPTOR.full_name
_CODES = {code.name: code for code in grpc.StatusCode}
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When and how to retry: on ``retry_on`` codes, up to ``num_retries`` more times."""

    retry_on: frozenset[grpc.StatusCode]
    num_retries: int = 1
    base_interval: float = DEFAULT_RETRY_BASE_INTERVAL
    max_interval: float = DEFAULT_RETRY_BASE_INTERVAL * 10
    per_try_timeout: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HashPolicy:
    """RING_HASH input: the value of request header ``header_name`` (gRFC A42)."""

    header_name: str
    terminal: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultConfig:
    """Injected faults: delay ``delay`` s on ``delay_percent`` % of calls, and/or abort
    ``abort_percent`` % with ``abort_grpc_status`` (or HTTP ``abort_http_status``)."""

    delay: float | None = None
    delay_percent: float = 0.0
    abort_grpc_status: grpc.StatusCode | None = None
    abort_http_status: int | None = None
    abort_percent: float = 0.0
    max_active_faults: int | None = None


def decode_retry_policy(proto: rc_pb2.RetryPolicy, field: str, name: str) -> RetryPolicy:
    """A ``RetryPolicy`` proto; NACKs a zero base interval or max < base (as gRPC does)."""
    codes = set()
    for condition in proto.retry_on.split(","):
        code = _CODES.get(condition.strip().upper().replace("-", "_"))
        if code is not None:
            codes.add(code)
    num_retries = proto.num_retries.value if proto.HasField("num_retries") else 1
    base = DEFAULT_RETRY_BASE_INTERVAL
    maximum: float | None = None
    if proto.HasField("retry_back_off"):
        backoff = proto.retry_back_off
        base = seconds(backoff.base_interval, f"{field}.retry_back_off.base_interval",
                       type_url=ROUTE, name=name)
        if base <= 0:
            raise ResourceValidationError(
                f"{field}.retry_back_off.base_interval: must be > 0", type_url=ROUTE,
                resource_name=name)
        if backoff.HasField("max_interval"):
            maximum = seconds(backoff.max_interval, f"{field}.retry_back_off.max_interval",
                              type_url=ROUTE, name=name)
            if maximum < base:
                raise ResourceValidationError(
                    f"{field}.retry_back_off: max_interval {maximum}s < base_interval {base}s",
                    type_url=ROUTE, resource_name=name)
    per_try = None
    if proto.HasField("per_try_timeout"):
        per_try = seconds(proto.per_try_timeout, f"{field}.per_try_timeout", type_url=ROUTE,
                          name=name) or None
    return RetryPolicy(retry_on=frozenset(codes), num_retries=num_retries, base_interval=base,
                       max_interval=base * 10 if maximum is None else maximum,
                       per_try_timeout=per_try)


def decode_hash_policy(proto: rc_pb2.RouteAction.HashPolicy) -> HashPolicy | None:
    """A header hash policy, or None for the kinds gRPC ignores (cookies, IPs, ...)."""
    if proto.WhichOneof("policy_specifier") != "header" or not proto.header.header_name:
        return None
    return HashPolicy(header_name=proto.header.header_name.lower(), terminal=proto.terminal)


def decode_fault(filters: Mapping[str, any_pb2.Any], field: str,
                 name: str) -> FaultConfig | None:
    """The fault override among ``typed_per_filter_config`` entries, if any.

    An entry may be wrapped in ``envoy.config.route.v3.FilterConfig``; a disabled one
    counts as no fault. Entries of other filters are ignored.
    """
    for filter_name, config in filters.items():
        where = f"{field}[{filter_name!r}]"
        if config.type_url == _FILTER_CONFIG_TYPE:
            wrapper = rc_pb2.FilterConfig()
            config.Unpack(wrapper)
            if wrapper.disabled:
                continue
            config = wrapper.config
        if config.type_url != FAULT_FILTER_TYPE:
            continue
        fault = fault_pb2.HTTPFault()
        if not config.Unpack(fault):
            raise ResourceValidationError(f"{where}: cannot parse HTTPFault",
                                          type_url=ROUTE, resource_name=name)
        return _fault(fault, where, name)
    return None


def _fault(fault: fault_pb2.HTTPFault, where: str, name: str) -> FaultConfig:
    delay, delay_percent = None, 0.0
    if fault.HasField("delay") and fault.delay.HasField("fixed_delay"):
        delay = seconds(fault.delay.fixed_delay, f"{where}.delay.fixed_delay", type_url=ROUTE,
                        name=name)
        delay_percent = fraction_percent(fault.delay.percentage)
    grpc_status, http_status, abort_percent = None, None, 0.0
    if fault.HasField("abort"):
        abort = fault.abort
        kind = abort.WhichOneof("error_type")
        if kind == "grpc_status":
            grpc_status = _CODE_BY_NUMBER.get(abort.grpc_status)
            if grpc_status is None or grpc_status is grpc.StatusCode.OK:
                raise ResourceValidationError(
                    f"{where}.abort.grpc_status: invalid code {abort.grpc_status}",
                    type_url=ROUTE, resource_name=name)
        elif kind == "http_status":
            if not 200 <= abort.http_status < 600:
                raise ResourceValidationError(
                    f"{where}.abort.http_status: {abort.http_status} not in [200, 600)",
                    type_url=ROUTE, resource_name=name)
            http_status = abort.http_status
        else:
            raise ResourceValidationError(
                f"{where}.abort: {kind or 'no status'} is not supported",
                type_url=ROUTE, resource_name=name)
        abort_percent = fraction_percent(abort.percentage)
    max_active = fault.max_active_faults.value if fault.HasField("max_active_faults") else None
    return FaultConfig(delay=delay, delay_percent=delay_percent, abort_grpc_status=grpc_status,
                       abort_http_status=http_status, abort_percent=abort_percent,
                       max_active_faults=max_active)
