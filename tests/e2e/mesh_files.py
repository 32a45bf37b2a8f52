"""Write Kubernetes-shaped mesh config for end-to-end tests, with real backend ports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

SERVICE_PORT = 50051


def service_yaml(name: str, ports: Sequence[int], *, address: str = "127.0.0.1",
                 namespace: str = "default") -> str:
    """A Service on SERVICE_PORT plus its EndpointSlice listing ``address:port`` endpoints."""
    # One EndpointSlice per distinct port: Kubernetes slices share one port list.
    slices = ""
    for i, port in enumerate(sorted(set(ports))):
        count = ports.count(port)
        eps = "".join(
            f"  - addresses: [\"{address}\"]\n    conditions: {{ready: true}}\n"
            f"    zone: zone-a\n"
            for _ in range(count)
        )
        slices += f"""---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{i}
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: grpc, port: {port}, protocol: TCP, appProtocol: grpc}}]
endpoints:
{eps}"""
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports: [{{name: grpc, port: {SERVICE_PORT}, targetPort: grpc, appProtocol: grpc}}]
{slices}"""


def route_yaml(parent: str, weights: Mapping[str, int], *,
               header: tuple[str, str, str] | None = None) -> str:
    """A GRPCRoute on ``parent``: optional header rule → backend, then weighted backends."""
    rules = ""
    if header is not None:
        key, value, backend = header
        rules += f"""  - matches:
    - headers: [{{name: {key}, value: "{value}"}}]
    backendRefs: [{{name: {backend}, port: {SERVICE_PORT}}}]
"""
    refs = ", ".join(
        f"{{name: {b}, port: {SERVICE_PORT}, weight: {w}}}" for b, w in weights.items()
    )
    rules += f"  - backendRefs: [{refs}]\n"
    return f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: {parent}, namespace: default}}
spec:
  parentRefs: [{{group: "", kind: Service, name: {parent}, port: {SERVICE_PORT}}}]
  rules:
{rules}"""


def write_mesh(directory: Path, backends: Mapping[str, Sequence[int]],
               weights: Mapping[str, int] | None = None, *,
               header: tuple[str, str, str] | None = None, extra: str = "") -> None:
    """``reviews`` (all backends) plus one Service per version, and its route."""
    directory.mkdir(parents=True, exist_ok=True)
    all_ports = [p for ports in backends.values() for p in ports]
    text = service_yaml("reviews", all_ports)
    for name, ports in backends.items():
        text += service_yaml(name, list(ports))
    (directory / "services.yaml").write_text(text)
    route = route_yaml("reviews", weights, header=header) if weights else ""
    # Write to a temp name and rename, as editors and kubectl do: one atomic change.
    tmp = directory / ".routes.yaml.tmp"
    tmp.write_text(route + extra)
    tmp.rename(directory / "routes.yaml")


def policy_yaml(service: str, spec: str) -> str:
    """A TrafficPolicy on ``service`` whose ``spec`` (besides targetRef) is ``spec``,
    given as indented YAML lines (two spaces)."""
    return f"""---
apiVersion: meshlib.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: {service}, namespace: default}}
spec:
  targetRef: {{kind: Service, name: {service}}}
{spec}"""
