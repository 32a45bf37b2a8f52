"""Names both sides build or parse: Listener and Cluster names, certificate files.

* A gRPC xDS server (and ``mesh.server()``) asks for the Listener of its listening
  address through :data:`SERVER_LISTENER_TEMPLATE` (gRFC A36), the template the
  bootstrap's ``server_listener_resource_name_template`` carries.
* Clusters follow Istio's ``outbound|<port>||<fqdn>`` naming
  (:func:`outbound_cluster_name`); meshlib labels metrics with the service it names
  (:func:`service_of`).
* A certificate directory holds :data:`CERT_FILE` (the chain, leaf first),
  :data:`KEY_FILE` and :data:`CA_FILE`: what ``meshctl certs issue`` writes, what the
  bootstrap's ``file_watcher`` certificate provider and meshlib's ``FileCertificates``
  read.

Example::

    >>> outbound_cluster_name("reviews.default.svc.cluster.local", 50051)
    'outbound|50051||reviews.default.svc.cluster.local'
    >>> service_of("outbound|50051||reviews.default.svc.cluster.local")
    'reviews.default:50051'
    >>> server_listener_name("::1", 50051)
    'grpc/server?xds.resource.listening_address=[::1]:50051'
"""

from __future__ import annotations

__all__ = [
    "CA_FILE",
    "CERT_FILE",
    "KEY_FILE",
    "SERVER_LISTENER_TEMPLATE",
    "outbound_cluster_name",
    "server_listener_name",
    "service_of",
]

# gRPC xDS servers fill ``%s`` with their listening ``ip:port`` (gRFC A36); the same
# string goes into the bootstrap's ``server_listener_resource_name_template``.
SERVER_LISTENER_TEMPLATE = "grpc/server?xds.resource.listening_address=%s"

_OUTBOUND = "outbound"

CERT_FILE = "cert.pem"  # the workload certificate, its chain following (leaf first)
KEY_FILE = "key.pem"  # its private key
CA_FILE = "ca.pem"  # the mesh roots peers are verified against


def server_listener_name(host: str, port: int) -> str:
    """The Listener a server on ``host:port`` asks for (IPv6 in brackets, given with or
    without them), as gRPC's own xDS server does with the bootstrap's template."""
    host = host.strip("[]")
    host = f"[{host}]" if ":" in host else host
    return SERVER_LISTENER_TEMPLATE % f"{host}:{port}"


def outbound_cluster_name(fqdn: str, port: int) -> str:
    """``outbound|50051||reviews.default.svc.cluster.local``: the Cluster (and EDS
    service name) of one Service port."""
    return f"{_OUTBOUND}|{port}||{fqdn}"


def service_of(cluster_name: str) -> str:
    """``outbound|50051||reviews.default.svc.cluster.local`` → ``reviews.default:50051``;
    any other name is returned as it is."""
    parts = cluster_name.split("|")
    if len(parts) == 4 and parts[0] == _OUTBOUND:
        host = parts[3].split(".svc.", 1)[0]
        return f"{host}:{parts[1]}"
    return cluster_name
