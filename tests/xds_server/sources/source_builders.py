"""Kubernetes-shaped objects for the sources tests, as plain dicts (camelCase)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from meshlib.errors import Problem
from xds_server.model import MeshModel
from xds_server.sources import parse_objects

ROOT = Path(__file__).resolve().parents[3]
SOURCE = "mesh.yaml"

Obj = dict[str, Any]

#: A TrafficPolicy spec with every field set.
FULL_TRAFFIC_SPEC = {
    "loadBalancer": {
        "type": "RING_HASH",
        "hashHeader": "X-User",
        "minimumRingSize": 64,
        "maximumRingSize": 4096,
    },
    "timeout": "2s",
    "retries": {
        "attempts": 4,
        "perTryTimeout": "500ms",
        "retryOn": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
        "backoff": {"baseInterval": "10ms", "maxInterval": "1s"},
        "budget": {"percent": 12.5, "minRetriesPerSecond": 3},
    },
    "circuitBreaker": {
        "consecutiveFailures": 3,
        "openDuration": "1m",
        "halfOpenProbes": 2,
        "maxConcurrentRequests": 100,
    },
    "outlierDetection": {
        "consecutiveFailures": 7,
        "interval": "5s",
        "baseEjectionTime": "15s",
        "maxEjectionTime": "2m",
        "maxEjectionPercent": 50,
        "failurePercentageThreshold": 80,
        "failurePercentageMinimumHosts": 3,
        "failurePercentageRequestVolume": 20,
    },
    "rateLimit": {"requestsPerSecond": 50.5, "burst": 100},
    "faultInjection": {
        "delay": {"percent": 10, "fixedDelay": "100ms"},
        "abort": {"percent": 1.5, "grpcStatus": "INTERNAL", "httpStatus": 500},
    },
}


def service(
    name: str = "reviews",
    *,
    namespace: str = "default",
    ports: list[Obj] | None = None,
    **spec: Any,
) -> Obj:
    """A v1 Service; one gRPC port 50051 unless ``ports`` is given."""
    if ports is None:
        ports = [{"name": "grpc", "port": 50051, "appProtocol": "grpc"}]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": ports, **spec},
    }


def endpoint_slice(
    name: str = "reviews-abc",
    *,
    service: str = "reviews",
    namespace: str = "default",
    ports: list[Obj] | None = None,
    endpoints: list[Obj] | None = None,
) -> Obj:
    if ports is None:
        ports = [{"name": "grpc", "port": 8080}]
    if endpoints is None:
        endpoints = [{"addresses": ["10.0.0.1"]}]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }


def route(
    kind: str = "GRPCRoute",
    name: str = "reviews",
    *,
    rules: list[Obj] | None = None,
    parent: str = "reviews",
    namespace: str = "default",
    api_version: str = "gateway.networking.k8s.io/v1",
    **spec: Any,
) -> Obj:
    if rules is None:
        rules = [{"backendRefs": [{"name": "reviews", "port": 50051}]}]
    spec.setdefault("parentRefs", [{"group": "", "kind": "Service", "name": parent}])
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {**spec, "rules": rules},
    }


def policy(
    kind: str,
    name: str = "reviews",
    *,
    namespace: str = "default",
    target: str = "reviews",
    **spec: Any,
) -> Obj:
    """A TrafficPolicy or AccessPolicy targeting Service ``target``."""
    return {
        "apiVersion": "meshlib.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"targetRef": {"group": "", "kind": "Service", "name": target}, **spec},
    }


def mesh_config(name: str = "mesh", **spec: Any) -> Obj:
    return {
        "apiVersion": "meshlib.dev/v1alpha1",
        "kind": "MeshConfig",
        "metadata": {"name": name},
        "spec": spec,
    }


def parse(*objects: Obj, source: str = SOURCE) -> tuple[MeshModel, list[Problem]]:
    """Parse deep copies (the parser must not depend on, or change, its input)."""
    return parse_objects([(source, copy.deepcopy(o)) for o in objects])


def lines(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


def parse_ok(*objects: Obj) -> MeshModel:
    """Parse objects that must have no problem at all."""
    model, problems = parse(*objects)
    assert lines(problems) == []
    return model
