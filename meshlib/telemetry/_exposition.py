"""The Prometheus side of :class:`~meshlib.telemetry.MeshMetrics`: its collectors
and the server series, registered when the registry is first used (a scrape, a
server), so a process that only makes client calls never imports prometheus_client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from meshlib.telemetry._tally import DURATION_BUCKETS

if TYPE_CHECKING:
    from meshlib._cluster_state import ClusterState
    from meshlib.telemetry._metrics import MeshMetrics

__all__ = ["expose"]


def expose(registry: CollectorRegistry, metrics: MeshMetrics,
           clusters: Callable[[], Iterable[ClusterState]] | None) -> tuple[Any, Any]:
    """Register ``metrics``' collectors (and the clusters') with ``registry``; returns
    the server series: the requests counter and the duration histogram."""
    registry.register(_CallCollector(metrics))
    if clusters is not None:
        registry.register(_ClusterCollector(clusters))
    requests = Counter(
        "meshlib_server_requests_total",
        "Calls a mesh server finished, by destination service, method, gRPC code and "
        "caller identity (namespace/service-account, or unknown for plaintext).",
        ["destination_service", "method", "code", "source_identity"], registry=registry)
    duration = Histogram(
        "meshlib_server_request_duration_seconds",
        "Time a mesh server spent on a call (until its last response message).",
        ["destination_service", "method", "code"], buckets=DURATION_BUCKETS,
        registry=registry)
    return requests, duration


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
