"""Golden metrics of a Mesh, Prometheus-compatible, in a registry of its own.

Client side (every call through ``mesh.channel()``, ``mesh.aio_channel()`` and
``mesh.http_client()``): requests and a duration histogram by source and destination
service, route, backend (the cluster a weighted route picked: ``reviews-canary``)
and response code; retries; request and response bytes; and, read when scraped,
circuit breakers open, endpoints ejected and ejections per backend.

Server side (``mesh.server()`` and the HTTP middleware): one request counter and one
duration histogram, by destination service, method, response code and — for the
counter — the caller's identity (``ns/sa``, or ``unknown`` for a plaintext caller);
request and response bytes. Label sets are bounded: no per-endpoint address, and
callers are service accounts, not pods. The full list is in docs/telemetry.md.

A call's series are looked up once per distinct label set and kept, so recording is
one ``inc`` and one ``observe`` (about 2 µs), not a ``labels()`` lookup per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from meshlib._cluster_state import ClusterState

__all__ = ["DURATION_BUCKETS", "MeshMetrics", "caller_label", "counting_codec"]

#: Seconds: sub-millisecond loopback calls up to slow ones.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)
_MAX_SERIES = 10_000


def caller_label(principal: str | None) -> str:
    """``spiffe://td/ns/shop/sa/frontend`` → ``shop/frontend``; None → ``unknown``."""
    if principal is None:
        return "unknown"
    _, _, path = principal.removeprefix("spiffe://").partition("/")
    parts = path.split("/")  # ns/<ns>/sa/<sa>
    return f"{parts[1]}/{parts[3]}" if len(parts) == 4 else principal


class MeshMetrics:
    """The metrics of one Mesh. ``serve(port)`` exposes them at ``/metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 clusters: Callable[[], Iterable[ClusterState]] | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.client_requests = Counter(
            "meshlib_client_requests_total",
            "Calls a mesh client made (retries included once), by source and destination "
            "service, route, backend and response code (gRPC code name or HTTP status).",
            ["source_service", "destination_service", "route", "backend", "code"],
            registry=self.registry)
        self.client_duration = Histogram(
            "meshlib_client_request_duration_seconds",
            "Time from a call's start to its outcome, retries and backoff included.",
            ["destination_service", "route", "backend", "code"], buckets=DURATION_BUCKETS,
            registry=self.registry)
        self.client_retries = Counter(
            "meshlib_client_retries_total",
            "Attempts after the first, by destination service, route and backend.",
            ["destination_service", "route", "backend"], registry=self.registry)
        self.client_request_bytes = Counter(
            "meshlib_client_request_bytes_total",
            "Bytes of request messages (gRPC: serialized; HTTP: bodies) sent.",
            ["destination_service", "method"], registry=self.registry)
        self.client_response_bytes = Counter(
            "meshlib_client_response_bytes_total",
            "Bytes of response messages (gRPC: serialized; HTTP: bodies) received.",
            ["destination_service", "method"], registry=self.registry)
        self.server_request_bytes = Counter(
            "meshlib_server_request_bytes_total",
            "Bytes of request messages a mesh server received.",
            ["destination_service", "method"], registry=self.registry)
        self.server_response_bytes = Counter(
            "meshlib_server_response_bytes_total",
            "Bytes of response messages a mesh server sent.",
            ["destination_service", "method"], registry=self.registry)
        if clusters is not None:
            self.registry.register(_ClusterCollector(clusters))
        self._client_series: dict[tuple[str, ...], tuple[Any, Any]] = {}
        self.server_requests = Counter(
            "meshlib_server_requests_total",
            "Calls a mesh server finished, by destination service, method, gRPC code and "
            "caller identity (namespace/service-account, or unknown for plaintext).",
            ["destination_service", "method", "code", "source_identity"],
            registry=self.registry)
        self.server_duration = Histogram(
            "meshlib_server_request_duration_seconds",
            "Time a mesh server spent on a call (until its last response message).",
            ["destination_service", "method", "code"], buckets=DURATION_BUCKETS,
            registry=self.registry)
        self._series: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``host:port`` (0: any free port) from a daemon thread;
        returns the port."""
        server, _ = start_http_server(port, host, registry=self.registry)
        return int(server.server_port)

    def record_client(self, source: str, destination: str, route: str, backend: str,
                      code: str, seconds: float, attempts: int) -> None:
        """One finished client call (``code``: gRPC code name or HTTP status)."""
        key = (destination, route, backend, code)
        series = self._client_series.get(key)
        if series is None:
            if len(self._client_series) >= _MAX_SERIES:
                self._client_series.clear()
            series = self._client_series[key] = (
                self.client_requests.labels(source, destination, route, backend, code),
                self.client_duration.labels(destination, route, backend, code))
        series[0].inc()
        series[1].observe(seconds)
        if attempts > 1:
            self.client_retries.labels(destination, route, backend).inc(attempts - 1)

    def record_server(self, service: str, method: str, code: grpc.StatusCode | str,
                      caller: str, seconds: float) -> None:
        """One finished server call (``code``: gRPC status or HTTP status string)."""
        name = code if isinstance(code, str) else code.name
        key = (service, method, name, caller)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= _MAX_SERIES:
                self._series.clear()
            series = self._series[key] = (
                self.server_requests.labels(service, method, name, caller),
                self.server_duration.labels(service, method, name))
        series[0].inc()
        series[1].observe(seconds)

    def byte_counters(self, side: str, service: str, method: str
                      ) -> tuple[Callable[[float], None], Callable[[float], None]]:
        """The ``inc`` of the request and response byte counters of one method
        (``side``: ``client`` or ``server``)."""
        if side == "client":
            pair = (self.client_request_bytes, self.client_response_bytes)
        else:
            pair = (self.server_request_bytes, self.server_response_bytes)
        return pair[0].labels(service, method).inc, pair[1].labels(service, method).inc


def counting_codec(serialize: Callable[[Any], bytes] | None,
                   deserialize: Callable[[bytes], Any] | None,
                   on_sent: Callable[[float], None], on_received: Callable[[float], None]
                   ) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    """A serializer and a deserializer (None: raw bytes) that also count the bytes
    they handle: ``on_sent(len)`` for what is serialized, ``on_received(len)`` for
    what is parsed."""
    def counted_serialize(message: Any) -> bytes:
        data = serialize(message) if serialize is not None else message
        on_sent(len(data))
        return data

    def counted_deserialize(data: bytes) -> Any:
        on_received(len(data))
        return deserialize(data) if deserialize is not None else data

    return counted_serialize, counted_deserialize


class _ClusterCollector(Collector):
    """Breakers, ejections and endpoints per backend, read from the live cluster
    states when scraped: nothing on the call path."""

    def __init__(self, clusters: Callable[[], Iterable[ClusterState]]) -> None:
        self._clusters = clusters

    def collect(self) -> Iterator[Any]:
        endpoints = GaugeMetricFamily(
            "meshlib_client_endpoints", "Endpoints the control plane lists, per backend.",
            labels=["backend"])
        ejected = GaugeMetricFamily(
            "meshlib_client_endpoints_ejected",
            "Endpoints out of rotation now (outlier detection), per backend.",
            labels=["backend"])
        open_ = GaugeMetricFamily(
            "meshlib_client_circuit_breakers_open",
            "Endpoint circuit breakers open now, per backend.", labels=["backend"])
        ejections = CounterMetricFamily(
            "meshlib_client_ejections", "Outlier ejections so far, per backend.",
            labels=["backend"])
        now = time.monotonic()
        for cluster in self._clusters():
            states = list(cluster.endpoints.values())
            backend = [cluster.service]
            endpoints.add_metric(backend, len(states))
            ejected.add_metric(backend, sum(1 for e in states if e.ejected_until > now))
            open_.add_metric(backend, sum(1 for e in states if e.breaker is not None
                                          and e.breaker.state == "open"))
            ejections.add_metric(backend, cluster.ejections_total)
        yield from (endpoints, ejected, open_, ejections)
