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

A call's series are looked up once per distinct label set and kept. Client calls
and byte counts are appended to lock-free tallies folded in batches
(:mod:`meshlib.telemetry._tally`, ~0.3 µs a call); server calls use
``prometheus_client``'s counter and histogram (~2 µs).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from meshlib.telemetry._tally import Durations, Total

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
    """The metrics of one Mesh. ``serve(port)`` exposes them at ``/metrics``.

    ``source_service`` labels the client series; ``clusters`` returns the cluster
    states whose breakers, ejections and endpoints are reported when scraped.
    """

    @staticmethod
    def counting_codec(serialize: Callable[[Any], bytes] | None,
                       deserialize: Callable[[bytes], Any] | None,
                       on_sent: Callable[[float], None], on_received: Callable[[float], None]
                       ) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
        """:func:`counting_codec`, for code that holds a MeshMetrics."""
        return counting_codec(serialize, deserialize, on_sent, on_received)

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 clusters: Callable[[], Iterable[ClusterState]] | None = None,
                 source_service: str = "") -> None:
        self.registry = registry or CollectorRegistry()
        self.source_service = source_service or "unknown"
        self._client: dict[tuple[str, str, str, str], Durations] = {}
        self._bytes: dict[tuple[str, str, str], tuple[Total, Total]] = {}
        self._lock = threading.Lock()
        self.registry.register(_CallCollector(self))
        if clusters is not None:
            self.registry.register(_ClusterCollector(clusters))
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

    def client_series(self, destination: str, route: str, backend: str, code: str
                      ) -> Durations:
        """The series a finished client call is added to (``code``: gRPC code name
        or HTTP status); ``add(seconds, retries)`` records one call."""
        key = (destination, route, backend, code)
        series = self._client.get(key)
        if series is None:
            with self._lock:
                if len(self._client) >= _MAX_SERIES:
                    self._client = {}
                series = self._client.setdefault(key, Durations(DURATION_BUCKETS))
        return series

    def record_client(self, destination: str, route: str, backend: str, code: str,
                      seconds: float, attempts: int) -> None:
        """One finished client call."""
        self.client_series(destination, route, backend, code).add(seconds, attempts - 1)

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
        """The ``add`` of the request and response byte totals of one method
        (``side``: ``client`` or ``server``)."""
        key = (side, service, method)
        with self._lock:
            pair = self._bytes.get(key)
            if pair is None:
                pair = self._bytes[key] = (Total(), Total())
        return pair[0].add, pair[1].add


class _CallCollector(Collector):
    """The client series and the byte totals, folded and read when scraped."""

    def __init__(self, metrics: MeshMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        metrics = self._metrics
        requests = CounterMetricFamily(
            "meshlib_client_requests",
            "Calls a mesh client made (retries included once), by source and destination "
            "service, route, backend and response code (gRPC code name or HTTP status).",
            labels=["source_service", "destination_service", "route", "backend", "code"])
        duration = HistogramMetricFamily(
            "meshlib_client_request_duration_seconds",
            "Time from a call's start to its outcome, retries and backoff included.",
            labels=["destination_service", "route", "backend", "code"])
        retries = CounterMetricFamily(
            "meshlib_client_retries",
            "Attempts after the first, by destination service, route and backend.",
            labels=["destination_service", "route", "backend"])
        retried: dict[tuple[str, str, str], int] = {}
        bounds = [*(repr(b) for b in DURATION_BUCKETS), "+Inf"]
        for key, series in list(metrics._client.items()):
            cumulative, total, count_retries = series.snapshot()
            requests.add_metric([metrics.source_service, *key], cumulative[-1])
            duration.add_metric(list(key), list(zip(bounds, cumulative, strict=True)),
                                total)
            retried[key[:3]] = retried.get(key[:3], 0) + count_retries
        for labels, count in retried.items():
            retries.add_metric(list(labels), count)
        yield from (requests, duration, retries)
        families = {}
        for side, what, help_text in (
                ("client", "request", "Bytes of request messages a mesh client sent "
                 "(gRPC: serialized messages; HTTP: bodies)."),
                ("client", "response", "Bytes of response messages a mesh client received."),
                ("server", "request", "Bytes of request messages a mesh server received."),
                ("server", "response", "Bytes of response messages a mesh server sent.")):
            families[side, what] = CounterMetricFamily(
                f"meshlib_{side}_{what}_bytes", help_text,
                labels=["destination_service", "method"])
        for (side, service, method), (request, response) in list(metrics._bytes.items()):
            families[side, "request"].add_metric([service, method], request.value())
            families[side, "response"].add_metric([service, method], response.value())
        yield from families.values()


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
