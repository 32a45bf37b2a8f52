"""Builders of mesh config: the Kubernetes objects the control plane reads, as dicts.

Each function returns one object (or a list of them) exactly as it would be written in
YAML for ``meshctl control-plane --config`` or ``kubectl apply``; :func:`to_yaml` and
:func:`write` turn them into files. The test control plane
(:class:`meshlib.testing.MeshControlPlane`) takes them directly::

    from meshlib.testing import config as c

    mesh_control_plane.apply(
        c.service("reviews"),
        c.endpoints("reviews", ["127.0.0.1:50061", "127.0.0.1:50062"]),
        c.split("reviews", {"reviews-v1": 90, "reviews-v2": 10}),
        c.traffic_policy("reviews", retries={"attempts": 3, "retryOn": ["UNAVAILABLE"]}),
    )

Field names inside ``spec`` are the CRDs' camelCase ones (docs/configuration.md);
keyword arguments that are not builder options pass through into ``spec`` unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_PORT",
    "ZONE",
    "access_policy",
    "allow",
    "deny",
    "endpoints",
    "flatten",
    "grpc_route",
    "http_route",
    "mesh_config",
    "rule",
    "service",
    "split",
    "to_yaml",
    "traffic_policy",
    "write",
]

Object = dict[str, Any]

DEFAULT_PORT = 50051  # the Service port tests and examples call (reviews:50051)
ZONE = "zone-a"  # the zone endpoints are in unless told otherwise

_MESH_GROUP = "meshlib.dev/v1alpha1"
_GATEWAY_GROUP = "gateway.networking.k8s.io/v1"
_HTTP_PROTOCOLS = ("http", "http2", "h2c")


def _meta(name: str, namespace: str | None, labels: Mapping[str, str] | None = None,
          annotations: Mapping[str, str] | None = None) -> Object:
    meta: Object = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _port_name(protocol: str) -> str:
    return "http" if protocol in _HTTP_PROTOCOLS else protocol


def service(name: str, *, namespace: str = "default", port: int = DEFAULT_PORT,
            protocol: str = "grpc", service_account: str | None = None,
            cluster_ip: str | None = None, labels: Mapping[str, str] | None = None,
            port_name: str | None = None) -> Object:
    """A ``v1/Service`` with one port (``appProtocol`` ``grpc``, ``http``, ``http2``
    or ``tcp``; the port is named after it unless ``port_name`` says); ``service_account``
    is the identity its backends run as (the ``meshlib.dev/service-account``
    annotation)."""
    annotations = {"meshlib.dev/service-account": service_account} if service_account else None
    port_name = port_name or _port_name(protocol)
    spec: Object = {"ports": [{"name": port_name, "port": port, "targetPort": port_name,
                               "appProtocol": protocol}]}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(name, namespace, labels, annotations), "spec": spec}


def endpoints(service_name: str, addresses: Iterable[str], *, namespace: str = "default",
              protocol: str = "grpc", zone: str = ZONE, ready: bool = True,
              name: str | None = None, port_name: str | None = None) -> list[Object]:
    """The ``discovery.k8s.io/v1`` EndpointSlices of ``service_name`` for endpoints
    ``host:port``. Kubernetes slices share one port list, so endpoints on different
    ports get one slice each, named ``<name or service>-<port>``. ``port_name`` links
    them to the Service port of that name (default: named after the protocol, as
    :func:`service` names it)."""
    by_port: dict[int, list[str]] = {}
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"endpoint {address!r}: expected HOST:PORT")
        by_port.setdefault(int(port), []).append(host.strip("[]"))
    port_name = port_name or _port_name(protocol)
    slices = []
    for port, hosts in sorted(by_port.items()):
        slices.append({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": _meta(f"{name or service_name}-{port}", namespace,
                              {"kubernetes.io/service-name": service_name}),
            "addressType": "IPv6" if ":" in hosts[0] else "IPv4",
            "ports": [{"name": port_name, "port": port, "protocol": "TCP",
                       "appProtocol": protocol}],
            "endpoints": [{"addresses": [host], "conditions": {"ready": ready}, "zone": zone}
                          for host in hosts],
        })
    return slices


def rule(backends: str | Mapping[str, int], *, port: int = DEFAULT_PORT,
         headers: Mapping[str, str] | None = None, method: str | None = None,
         path: str | None = None, http_method: str | None = None, name: str | None = None,
         **fields: Any) -> Object:
    """One route rule: to ``backends`` (a Service name, or names with weights), when
    every given match holds. ``method`` is ``"Service/Method"`` or ``"Service/*"``
    for a GRPCRoute; ``path`` (a path prefix) and ``http_method`` (``GET``) for an
    HTTPRoute. ``fields`` (such as
    ``timeouts``) go into the rule as they are."""
    weights = {backends: 1} if isinstance(backends, str) else dict(backends)
    refs = [{"name": b, "port": port} if isinstance(backends, str)
            else {"name": b, "port": port, "weight": w} for b, w in weights.items()]
    out: Object = {}
    if name:
        out["name"] = name
    match: Object = {}
    if headers:
        match["headers"] = [{"type": "Exact", "name": k, "value": v} for k, v in headers.items()]
    if method:
        svc, _, meth = method.strip("/").partition("/")
        match["method"] = {"service": svc, **({"method": meth} if meth and meth != "*" else {})}
    if path:
        match["path"] = {"type": "PathPrefix", "value": path}
    if http_method:
        match["method"] = http_method.upper()
    if match:
        out["matches"] = [match]
    out["backendRefs"] = refs
    out.update(fields)
    return out


def _route(kind: str, parent: str, rules: Sequence[Object], *, namespace: str, port: int,
           name: str | None) -> Object:
    return {
        "apiVersion": _GATEWAY_GROUP,
        "kind": kind,
        "metadata": _meta(name or parent, namespace),
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": parent, "port": port}],
            "rules": list(rules),
        },
    }


def grpc_route(parent: str, *rules: Object, namespace: str = "default",
               port: int = DEFAULT_PORT, name: str | None = None) -> Object:
    """A Gateway API GRPCRoute attached to Service ``parent`` (GAMMA); build its
    rules with :func:`rule`."""
    return _route("GRPCRoute", parent, rules, namespace=namespace, port=port, name=name)


def http_route(parent: str, *rules: Object, namespace: str = "default",
               port: int = DEFAULT_PORT, name: str | None = None) -> Object:
    """A Gateway API HTTPRoute attached to Service ``parent``."""
    return _route("HTTPRoute", parent, rules, namespace=namespace, port=port, name=name)


def split(parent: str, weights: Mapping[str, int], *, kind: str = "GRPCRoute",
          namespace: str = "default", port: int = DEFAULT_PORT) -> Object:
    """A route sending ``parent``'s traffic to backends by weight: a canary is
    ``split("reviews", {"reviews-v1": 90, "reviews-v2": 10})``."""
    return _route(kind, parent, [rule(weights, port=port)], namespace=namespace, port=port,
                  name=None)


def _policy(kind: str, target: str, spec: Mapping[str, Any], *, namespace: str,
            name: str | None) -> Object:
    return {
        "apiVersion": _MESH_GROUP,
        "kind": kind,
        "metadata": _meta(name or target, namespace),
        "spec": {"targetRef": {"group": "", "kind": "Service", "name": target}, **spec},
    }


def traffic_policy(target: str, *, namespace: str = "default", name: str | None = None,
                   **spec: Any) -> Object:
    """A TrafficPolicy on Service ``target``; ``spec`` fields as in the CRD, e.g.
    ``retries={"attempts": 3, "retryOn": ["UNAVAILABLE"]}``, ``timeout="2s"``,
    ``faultInjection={"abort": {"percent": 100, "grpcStatus": "UNAVAILABLE"}}``."""
    return _policy("TrafficPolicy", target, spec, namespace=namespace, name=name)


def allow(*, identities: Sequence[str] = (), service_accounts: Sequence[str] = (),
          namespaces: Sequence[str] = (), methods: Sequence[str] = (),
          paths: Sequence[str] = ()) -> Object:
    """An ALLOW rule of an AccessPolicy: from any of the given callers (none: anyone)
    to any of the given methods or paths (none: everything)."""
    return _access_rule("ALLOW", identities, service_accounts, namespaces, methods, paths)


def deny(*, identities: Sequence[str] = (), service_accounts: Sequence[str] = (),
         namespaces: Sequence[str] = (), methods: Sequence[str] = (),
         paths: Sequence[str] = ()) -> Object:
    """A DENY rule of an AccessPolicy (DENY rules are checked before ALLOW ones)."""
    return _access_rule("DENY", identities, service_accounts, namespaces, methods, paths)


def _access_rule(action: str, identities: Sequence[str], service_accounts: Sequence[str],
                 namespaces: Sequence[str], methods: Sequence[str],
                 paths: Sequence[str]) -> Object:
    out: Object = {"action": action}
    sources = ([{"identities": list(identities)}] if identities else []) + \
        ([{"serviceAccounts": list(service_accounts)}] if service_accounts else []) + \
        ([{"namespaces": list(namespaces)}] if namespaces else [])
    if sources:
        out["from"] = sources
    targets = ([{"methods": list(methods)}] if methods else []) + \
        ([{"paths": list(paths)}] if paths else [])
    if targets:
        out["to"] = targets
    return out


def access_policy(target: str, *rules: Object, mode: str | None = None,
                  namespace: str = "default", name: str | None = None) -> Object:
    """An AccessPolicy on Service ``target``: its mTLS ``mode`` (``STRICT``,
    ``PERMISSIVE``, ``DISABLE``) and rules built with :func:`allow` / :func:`deny`."""
    spec: Object = {}
    if mode is not None:
        spec["mtls"] = {"mode": mode}
    if rules:
        spec["rules"] = list(rules)
    return _policy("AccessPolicy", target, spec, namespace=namespace, name=name)


def mesh_config(*, name: str = "mesh", **spec: Any) -> Object:
    """The MeshConfig (cluster-scoped, one per mesh), e.g. ``mtls={"mode": "STRICT"}``,
    ``accessLogs={"enabled": True}``, ``tracing={"sampling": 1.0}``."""
    return {"apiVersion": _MESH_GROUP, "kind": "MeshConfig", "metadata": {"name": name},
            "spec": dict(spec)}


def flatten(objects: Iterable[Object | Iterable[Object]]) -> list[Object]:
    """Objects and lists of objects (as :func:`endpoints` returns), in order."""
    out: list[Object] = []
    for item in objects:
        if isinstance(item, Mapping):
            out.append(dict(item))
        else:
            out.extend(flatten(item))
    return out


def to_yaml(*objects: Object | Iterable[Object]) -> str:
    """The objects as one multi-document YAML text."""
    import yaml

    return yaml.safe_dump_all(flatten(objects), sort_keys=False, explicit_start=True)


def write(path: str | Path, *objects: Object | Iterable[Object]) -> Path:
    """Write the objects to the YAML file ``path`` atomically (a temporary file renamed
    over it, as editors and ``kubectl`` do: a watching control plane sees one change)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(to_yaml(*objects))
    tmp.replace(path)
    return path
