"""The validation error and small proto helpers shared by the decoders; the xDS type
URLs (from :mod:`meshlib.contract.resources`, shared with the control plane).

Every decoder is a pure function ``decode(any_pb2.Any) -> Update`` that raises
:class:`ResourceValidationError`; nothing here does I/O.
"""

from __future__ import annotations

from typing import TypeVar

from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, message

from meshlib.contract import (
    CLUSTER,
    ENDPOINT,
    FULL_STATE_TYPES,
    LISTENER,
    ROUTE,
    SECRET,
    TYPE_URL_PREFIX,
    XdsError,
    short_name,
)

__all__ = [
    "CLUSTER",
    "ENDPOINT",
    "FULL_STATE_TYPES",
    "LISTENER",
    "ROUTE",
    "SECRET",
    "ResourceValidationError",
    "fraction_percent",
    "seconds",
    "short_name",
    "unpack",
]

_DENOMINATORS = {
    percent_pb2.FractionalPercent.HUNDRED: 100,
    percent_pb2.FractionalPercent.TEN_THOUSAND: 10_000,
    percent_pb2.FractionalPercent.MILLION: 1_000_000,
}

M = TypeVar("M", bound=message.Message)


class ResourceValidationError(XdsError):
    """A resource the client cannot use; the ADS client NACKs the response carrying it.

    ``detail`` is the bare reason; ``str(error)`` names the type and the resource, e.g.
    ``CDS resource 'outbound|50051||reviews': ring_hash_lb_config: minimum_ring_size
    2048 > maximum_ring_size 1024``. ``resource_name`` is ``""`` when the resource could
    not even be parsed far enough to read its name.
    """

    def __init__(self, detail: str, *, type_url: str, resource_name: str = "") -> None:
        self.detail = detail
        where = f"{short_name(type_url)} resource"
        if resource_name:
            where += f" {resource_name!r}"
        super().__init__(f"{where}: {detail}", type_url=type_url, resource_name=resource_name)


def unpack(any_msg: any_pb2.Any, cls: type[M], type_url: str, name: str = "") -> M:
    """``any_msg`` as a ``cls``, or a :class:`ResourceValidationError` saying why not."""
    expected = TYPE_URL_PREFIX + cls.DESCRIPTOR.full_name
    if any_msg.type_url != expected:
        raise ResourceValidationError(
            f"expected {cls.DESCRIPTOR.full_name}, got {any_msg.type_url or 'no type URL'}",
            type_url=type_url, resource_name=name)
    out = cls()
    try:
        out.ParseFromString(any_msg.value)
    except message.DecodeError as err:
        raise ResourceValidationError(f"cannot parse {cls.DESCRIPTOR.full_name}: {err}",
                                      type_url=type_url, resource_name=name) from err
    return out


def seconds(value: duration_pb2.Duration, field: str, *, type_url: str, name: str) -> float:
    """A valid, non-negative ``Duration`` in seconds (protobuf's range rules)."""
    if value.seconds < 0 or not 0 <= value.nanos < 1_000_000_000:
        raise ResourceValidationError(
            f"{field}: invalid duration {value.seconds}s {value.nanos}ns",
            type_url=type_url, resource_name=name)
    return value.seconds + value.nanos / 1e9


def fraction_percent(value: percent_pb2.FractionalPercent) -> float:
    """A ``FractionalPercent`` as a percentage in [0, 100] (Envoy clamps above 100 %)."""
    denominator = _DENOMINATORS.get(value.denominator, 100)
    return min(100.0, value.numerator * 100 / denominator)
