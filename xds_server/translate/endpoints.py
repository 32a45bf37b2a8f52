"""ClusterLoadAssignments: EndpointSlices → one EDS resource per Service port.

Every Cluster gets one, even with no endpoints: an EDS name that never resolves
leaves clients waiting for it, while an empty assignment fails calls at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import wrappers_pb2

from xds_server.model import Endpoint, EndpointSlice, MeshModel, Service, ServicePort
from xds_server.translate.names import cluster_name

__all__ = ["build_load_assignment", "health_status", "load_assignments"]

_Health = health_check_pb2.HealthStatus


def load_assignments(model: MeshModel, services: Iterable[Service] | None = None
                     ) -> dict[str, endpoint_pb2.ClusterLoadAssignment]:
    """Every Service port's ClusterLoadAssignment (of ``services`` only, when given),
    keyed by cluster (= EDS) name."""
    domain = model.mesh_config.cluster_domain
    out: dict[str, endpoint_pb2.ClusterLoadAssignment] = {}
    for service in model.services if services is None else services:
        slices = model.endpoint_slices_for(service)
        for port in service.distinct_ports:
            name = cluster_name(service, port.port, cluster_domain=domain)
            out[name] = build_load_assignment(name, port, slices)
    return out


def build_load_assignment(name: str, port: ServicePort, slices: Iterable[EndpointSlice]
                          ) -> endpoint_pb2.ClusterLoadAssignment:
    """The endpoints of ``port`` from ``slices``, one locality per zone.

    A slice port links to the Service port by *name* (Kubernetes; ``""`` matches
    ``""``), and gives the port number to dial. Every address of an endpoint counts.
    """
    by_zone: dict[str, list[ec_pb2.LbEndpoint]] = {}
    seen: set[tuple[str, int]] = set()
    for endpoint_slice in slices:
        if endpoint_slice.address_type == "FQDN":
            continue  # host names are not socket addresses (Envoy and gRPC reject them)
        number = next((p.port for p in endpoint_slice.ports if p.name == port.name), None)
        if number is None:
            continue
        for endpoint in endpoint_slice.endpoints:
            status = health_status(endpoint)
            for address in endpoint.addresses:
                if (address, number) in seen:
                    continue
                seen.add((address, number))
                by_zone.setdefault(endpoint.zone, []).append(_lb_endpoint(address, number, status))
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            # gRPC silently drops a locality without load_balancing_weight.
            ec_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(zone=zone),
                lb_endpoints=lb_endpoints,
                load_balancing_weight=wrappers_pb2.UInt32Value(value=len(lb_endpoints)),
            )
            for zone, lb_endpoints in sorted(by_zone.items())
        ],
    )


def health_status(endpoint: Endpoint) -> int:
    """HEALTHY when ready; DRAINING when terminating but still serving; else UNHEALTHY."""
    if endpoint.ready:
        return _Health.HEALTHY
    if endpoint.serving and endpoint.terminating:
        return _Health.DRAINING
    return _Health.UNHEALTHY


def _lb_endpoint(address: str, port: int, status: int) -> ec_pb2.LbEndpoint:
    socket_address = address_pb2.SocketAddress(address=address, port_value=port)
    return ec_pb2.LbEndpoint(
        endpoint=ec_pb2.Endpoint(address=address_pb2.Address(socket_address=socket_address)),
        health_status=status,
    )
