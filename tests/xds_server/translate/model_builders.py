"""Terse builders for hand-made MeshModels, for translation tests (and anyone else).

Example::

    reviews = service("reviews", grpc=50051)
    model = mesh(
        reviews,
        endpoint_slice(reviews, endpoint("10.0.0.1", zone="a"), port=8080),
        grpc_route("reviews", rule(backend("reviews-v1", 90), backend("reviews-v2", 10))),
    )
"""

from __future__ import annotations

from typing import Any

from xds_server.model import (
    AccessPolicy,
    AccessRule,
    BackendRef,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    HeaderMatch,
    LoadBalancer,
    MeshConfig,
    MeshModel,
    ParentRef,
    PathMatch,
    Route,
    RouteMatch,
    RouteRule,
    Service,
    ServicePort,
    TargetRef,
    TrafficPolicy,
)

__all__ = [
    "access_policy",
    "access_rule",
    "backend",
    "endpoint",
    "endpoint_slice",
    "grpc_route",
    "header",
    "http_route",
    "match",
    "mesh",
    "policy",
    "port",
    "rule",
    "service",
]


def port(number: int, name: str = "grpc", protocol: str = "grpc") -> ServicePort:
    """A Service port; ``target_port`` is the port name, as Kubernetes users write it."""
    return ServicePort(name=name, port=number, target_port=name or number,
                       protocol=protocol, app_protocol=protocol)  # type: ignore[arg-type]


def service(name: str, *ports: ServicePort, namespace: str = "default",
            grpc: int | None = None) -> Service:
    """A Service; ``grpc=50051`` is shorthand for one port named ``grpc``."""
    all_ports = list(ports)
    if grpc is not None:
        all_ports.append(port(grpc))
    return Service(name=name, namespace=namespace, ports=tuple(all_ports or [port(50051)]))


def endpoint(*addresses: str, zone: str = "", ready: bool = True, serving: bool = True,
             terminating: bool = False) -> Endpoint:
    return Endpoint(addresses=addresses, zone=zone, ready=ready, serving=serving,
                    terminating=terminating)


def endpoint_slice(svc: Service, *endpoints: Endpoint, port: int = 8080,
                   port_name: str | None = None, ports: tuple[EndpointPort, ...] = (),
                   name: str | None = None, address_type: str = "IPv4") -> EndpointSlice:
    """A slice of ``svc``; by default one port named like the Service's first port."""
    if not ports:
        link = svc.ports[0].name if port_name is None else port_name
        ports = (EndpointPort(name=link, port=port),)
    return EndpointSlice(name=name or f"{svc.name}-{port}", namespace=svc.namespace,
                         service_name=svc.name, address_type=address_type, ports=ports,
                         endpoints=endpoints)


def backend(name: str, weight: int = 1, *, port: int | None = None,
            namespace: str = "default") -> BackendRef:
    return BackendRef(name=name, namespace=namespace, port=port, weight=weight)


def header(name: str, value: str, type: str = "Exact") -> HeaderMatch:
    return HeaderMatch(name=name, value=value, type=type)  # type: ignore[arg-type]


def match(path: tuple[str, str] | None = None, *headers: HeaderMatch, method: str | None = None,
          query: tuple[HeaderMatch, ...] = ()) -> RouteMatch:
    """``match(("Exact", "/pkg.Svc/Get"), header("x", "1"))``."""
    path_match = None if path is None else PathMatch(type=path[0], value=path[1])  # type: ignore[arg-type]
    return RouteMatch(path=path_match, headers=headers, method=method, query_params=query)


def rule(*backends: BackendRef, matches: tuple[RouteMatch, ...] = (),
         timeout: float | None = None, backend_request_timeout: float | None = None,
         ) -> RouteRule:
    return RouteRule(matches=matches, backend_refs=backends, timeout=timeout,
                     backend_request_timeout=backend_request_timeout)


def grpc_route(parent: str, *rules: RouteRule, name: str | None = None,
               namespace: str = "default", parent_port: int | None = None,
               parent_namespace: str | None = None) -> Route:
    return _route("GRPCRoute", parent, rules, name, namespace, parent_port, parent_namespace)


def http_route(parent: str, *rules: RouteRule, name: str | None = None,
               namespace: str = "default", parent_port: int | None = None,
               parent_namespace: str | None = None) -> Route:
    return _route("HTTPRoute", parent, rules, name, namespace, parent_port, parent_namespace)


def _route(kind: str, parent: str, rules: tuple[RouteRule, ...], name: str | None,
           namespace: str, parent_port: int | None, parent_namespace: str | None) -> Route:
    ref = ParentRef(name=parent, namespace=parent_namespace or namespace, port=parent_port)
    return Route(kind=kind, name=name or parent, namespace=namespace,  # type: ignore[arg-type]
                 parent_refs=(ref,), rules=rules)


def policy(target: str, namespace: str = "default", *, lb: str | None = None,
           **fields: Any) -> TrafficPolicy:
    """A TrafficPolicy on ``target``; ``lb="RING_HASH"`` etc. is a LoadBalancer shorthand."""
    if lb is not None:
        fields.setdefault("load_balancer", LoadBalancer(type=lb))  # type: ignore[arg-type]
    return TrafficPolicy(name=f"{target}-policy", namespace=namespace,
                         target_ref=TargetRef(name=target), **fields)


def access_rule(action: str = "ALLOW", **fields: Any) -> AccessRule:
    """``access_rule("DENY", from_service_accounts=("frontend",))``."""
    return AccessRule(action=action, **fields)  # type: ignore[arg-type]


def access_policy(target: str, *rules: AccessRule, mode: str | None = None,
                  namespace: str = "default", name: str | None = None) -> AccessPolicy:
    """An AccessPolicy on ``target``: ``mode`` (None: the mesh default) and ``rules``."""
    return AccessPolicy(name=name or target, namespace=namespace,
                        target_ref=TargetRef(name=target), mtls_mode=mode,  # type: ignore[arg-type]
                        rules=rules)


def mesh(*objects: object, mesh_config: MeshConfig | None = None) -> MeshModel:
    """A MeshModel of ``objects``, each put in its collection by type, in order."""
    buckets: dict[type, list[Any]] = {Service: [], EndpointSlice: [], Route: [],
                                      TrafficPolicy: [], AccessPolicy: []}
    for obj in objects:
        buckets[type(obj)].append(obj)
    return MeshModel(
        services=tuple(buckets[Service]),
        endpoint_slices=tuple(buckets[EndpointSlice]),
        routes=tuple(buckets[Route]),
        traffic_policies=tuple(buckets[TrafficPolicy]),
        access_policies=tuple(buckets[AccessPolicy]),
        mesh_config=mesh_config or MeshConfig(),
    )
