"""Write Kubernetes-shaped mesh config for end-to-end tests, with real backend ports.

The objects come from :mod:`meshlib.testing.config`, the builders users' tests and the
examples share; these helpers only turn them into the YAML files the control plane
process watches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from meshlib.testing import config as c

SERVICE_PORT = c.DEFAULT_PORT


def service_yaml(name: str, ports: Sequence[int], *, address: str = "127.0.0.1",
                 namespace: str = "default") -> str:
    """A Service on SERVICE_PORT plus its EndpointSlices listing ``address:port``
    endpoints (one per port; a port listed twice is two endpoints)."""
    return c.to_yaml(c.service(name, namespace=namespace),
                     c.endpoints(name, [f"{address}:{port}" for port in ports],
                                 namespace=namespace))


def route_yaml(parent: str, weights: Mapping[str, int], *,
               header: tuple[str, str, str] | None = None) -> str:
    """A GRPCRoute on ``parent``: optional header rule → backend, then weighted backends."""
    rules = []
    if header is not None:
        key, value, backend = header
        rules.append(c.rule(backend, headers={key: value}))
    rules.append(c.rule(weights))
    return c.to_yaml(c.grpc_route(parent, *rules))


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
    return c.to_yaml(c.traffic_policy(service, **(yaml.safe_load(spec) or {})))
