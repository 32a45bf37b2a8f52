"""ClusterLoadAssignment (EDS): localities of endpoints with health and weights.

As in gRPC (gRFC A27): a locality without ``load_balancing_weight`` (or with 0) is
dropped; priorities must be contiguous from 0; each endpoint needs a socket address
with a port. An endpoint is healthy when its status is HEALTHY or UNKNOWN.

Example::

    update = decode_endpoints(any_msg)
    [(e.address, e.port) for e in update.endpoints if e.healthy]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import any_pb2

from meshlib.xds._resources import ENDPOINT, ResourceValidationError, unpack

__all__ = ["Endpoint", "EndpointsUpdate", "HealthStatus", "Locality", "decode_endpoints"]

HealthStatus = Literal["UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED"]
_HEALTHY = frozenset({"UNKNOWN", "HEALTHY"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One backend address and its health, with its locality's zone and weight."""

    address: str
    port: int
    health: HealthStatus = "UNKNOWN"
    weight: int = 1
    zone: str = ""
    locality_weight: int = 1

    @property
    def healthy(self) -> bool:
        """Whether calls may go to it (HEALTHY or UNKNOWN)."""
        return self.health in _HEALTHY


@dataclass(frozen=True, slots=True, kw_only=True)
class Locality:
    """A weighted group of endpoints in one region/zone/sub-zone at one priority."""

    region: str
    zone: str
    sub_zone: str
    weight: int
    priority: int
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointsUpdate:
    """A decoded ClusterLoadAssignment; ``endpoints`` flattens every locality."""

    cluster_name: str
    localities: tuple[Locality, ...]

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Every endpoint of every locality, in order."""
        return tuple(e for loc in self.localities for e in loc.endpoints)


def decode_endpoints(any_msg: any_pb2.Any) -> EndpointsUpdate:
    """Decode and validate one EDS resource; raises :class:`ResourceValidationError`."""
    assignment = unpack(any_msg, endpoint_pb2.ClusterLoadAssignment, ENDPOINT)
    name = assignment.cluster_name

    def invalid(detail: str) -> ResourceValidationError:
        return ResourceValidationError(detail, type_url=ENDPOINT, resource_name=name)

    if not name:
        raise invalid("ClusterLoadAssignment has no cluster_name")
    localities = []
    for i, group in enumerate(assignment.endpoints):
        weight = group.load_balancing_weight.value
        if weight == 0:
            continue  # gRPC drops it silently
        zone = group.locality.zone
        endpoints = tuple(_endpoint(e, f"endpoints[{i}].lb_endpoints[{j}]", zone, weight,
                                    invalid)
                          for j, e in enumerate(group.lb_endpoints))
        localities.append(Locality(region=group.locality.region, zone=zone,
                                   sub_zone=group.locality.sub_zone, weight=weight,
                                   priority=group.priority, endpoints=endpoints))
    priorities = sorted({loc.priority for loc in localities})
    if priorities != list(range(len(priorities))):
        raise invalid(f"priorities {priorities} are not contiguous from 0")
    return EndpointsUpdate(cluster_name=name, localities=tuple(localities))


def _endpoint(proto: ec_pb2.LbEndpoint, field: str, zone: str, locality_weight: int,
              invalid: Callable[[str], ResourceValidationError]) -> Endpoint:
    address = proto.endpoint.address
    if address.WhichOneof("address") != "socket_address":
        raise invalid(f"{field}: not a socket address")
    socket = address.socket_address
    if not socket.address or socket.WhichOneof("port_specifier") != "port_value":
        raise invalid(f"{field}: needs an address and a port_value")
    if not 0 < socket.port_value < 65536:
        raise invalid(f"{field}: port {socket.port_value} out of range")
    weight = proto.load_balancing_weight.value if proto.HasField("load_balancing_weight") else 1
    if weight == 0:
        raise invalid(f"{field}: load_balancing_weight is 0")
    health: HealthStatus = health_check_pb2.HealthStatus.Name(proto.health_status)  # type: ignore[assignment]
    return Endpoint(address=socket.address, port=socket.port_value, health=health,
                    weight=weight, zone=zone, locality_weight=locality_weight)
