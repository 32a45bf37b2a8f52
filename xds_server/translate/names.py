"""Resource names shared by the translator, the bootstrap writer and the clients.

A gRPC client asks for a Listener named exactly as its target authority
(``xds:///reviews.default:50051`` → Listener ``reviews.default:50051``), so every
form a Kubernetes user may write gets a Listener of its own. Clusters follow Istio's
``outbound|port||fqdn`` naming, and a Cluster's EDS ``service_name`` is the cluster
name itself. The names meshlib parses too (server Listeners, Clusters) are built by
:mod:`meshlib.contract.names`.
"""

from __future__ import annotations

from meshlib.contract import SERVER_LISTENER_TEMPLATE, outbound_cluster_name, server_listener_name
from xds_server.model import DEFAULT_CLUSTER_DOMAIN, Service

__all__ = [
    "ENVOY_OUTBOUND_LISTENER",
    "ENVOY_OUTBOUND_ROUTE",
    "FAULT_FILTER",
    "LOCAL_RATE_LIMIT_FILTER",
    "RBAC_ALLOW_FILTER",
    "RBAC_DENY_FILTER",
    "ROUTER_FILTER",
    "SERVER_LISTENER_TEMPLATE",
    "cluster_name",
    "default_service_port",
    "listener_names",
    "route_config_name",
    "server_listener_name",
]

ENVOY_OUTBOUND_LISTENER = "outbound"
ENVOY_OUTBOUND_ROUTE = "outbound"

FAULT_FILTER = "envoy.filters.http.fault"
ROUTER_FILTER = "envoy.filters.http.router"
# Two RBAC filters on one HttpConnectionManager need distinct names (gRPC NACKs
# duplicates); gRPC and Envoy find the filter by its typed_config type, not its name.
RBAC_DENY_FILTER = "meshlib.rbac.deny"
RBAC_ALLOW_FILTER = "meshlib.rbac.allow"
LOCAL_RATE_LIMIT_FILTER = "meshlib.local_rate_limit"

_DEFAULT_PROTOCOLS = ("grpc", "http2")


def cluster_name(service: Service, port: int, *, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
                 ) -> str:
    """``outbound|50051||reviews.default.svc.cluster.local``; also the EDS service name."""
    return outbound_cluster_name(service.fqdn(cluster_domain), port)


def route_config_name(service: Service, port: int, *,
                      cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> str:
    """``reviews.default.svc.cluster.local:50051``: the RDS name of one Service port."""
    return f"{service.fqdn(cluster_domain)}:{port}"


def default_service_port(service: Service) -> int | None:
    """The port a port-less target means: the first grpc/http2 port, else the first port
    (None for a Service without ports, such as a headless one)."""
    for p in service.ports:
        if p.protocol in _DEFAULT_PROTOCOLS:
            return p.port
    return service.ports[0].port if service.ports else None


def listener_names(service: Service, port: int, group_namespace: str,
                   default_port: int | None = None, *,
                   cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> tuple[str, ...]:
    """Every target authority a client in ``group_namespace`` may use for ``service:port``.

    Fully qualified and ``name.namespace`` forms always; bare ``name`` forms only for
    callers in the Service's namespace (as Kubernetes DNS search paths resolve them).
    Forms without a port exist only for the default port (see
    :func:`default_service_port`, used when ``default_port`` is None).

    Example::

        >>> from xds_server.model import Service, ServicePort
        >>> svc = Service(name="reviews", namespace="default",
        ...               ports=(ServicePort(name="grpc", port=50051, target_port=50051,
        ...                                  protocol="grpc"),))
        >>> listener_names(svc, 50051, "default")[-2:]
        ('reviews:50051', 'reviews')
    """
    if default_port is None:
        default_port = default_service_port(service)
    hosts = [service.fqdn(cluster_domain), f"{service.name}.{service.namespace}"]
    if service.namespace == group_namespace:
        hosts.append(service.name)
    names: list[str] = []
    for host in hosts:
        names.append(f"{host}:{port}")
        if port == default_port:
            names.append(host)
    return tuple(names)
