"""Generate a large Kubernetes-shaped mesh config for the benchmarks."""

from __future__ import annotations

from pathlib import Path


def services_yaml(services: int, endpoints: int) -> str:
    parts = []
    for i in range(services):
        name = f"svc-{i}"
        eps = "".join(
            f"  - addresses: [\"10.{(i >> 8) & 255}.{i & 255}.{j + 1}\"]\n"
            f"    conditions: {{ready: true}}\n    zone: zone-{j % 3}\n"
            for j in range(endpoints)
        )
        parts.append(f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: grpc, port: 50051, targetPort: 8080, appProtocol: grpc}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-abcde
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: grpc, port: 8080, protocol: TCP}}]
endpoints:
{eps}""")
    return "".join(parts)


def route_yaml(weight: int) -> str:
    return f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: svc-0, namespace: default}}
spec:
  parentRefs: [{{kind: Service, name: svc-0, port: 50051}}]
  rules:
  - backendRefs:
    - {{name: svc-1, port: 50051, weight: {weight}}}
    - {{name: svc-2, port: 50051, weight: {100 - weight}}}
"""


def write(directory: Path, services: int = 1000, endpoints: int = 10) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "services.yaml").write_text(services_yaml(services, endpoints))
    (directory / "routes.yaml").write_text(route_yaml(90))
