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
callers are service accounts, not pods. A label whose value a remote caller picks is
folded: an HTTP method outside :data:`HTTP_METHODS` is recorded as ``_OTHER``
(OpenTelemetry's ``http.request.method`` convention), and so is a gRPC method served
by a catch-all generic handler (no registered name; grpc's OpenTelemetry plugin says
``other``). Each kind of series is capped at ``_MAX_SERIES``: past it the oldest
quarter is dropped (the server's ``prometheus_client`` children removed, so the
exposition shrinks), and byte totals past the cap go to one ``_OTHER`` pair. The full
list is in docs/telemetry.md.

A call's series are looked up once per distinct label set and kept. Client calls
and byte counts are appended to lock-free tallies folded in batches
(:mod:`meshlib.telemetry._tally`, ~0.3 µs a call); server calls use
``prometheus_client``'s counter and histogram (~2 µs).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from itertools import islice
from typing import TYPE_CHECKING, Any

import grpc

from meshlib.contract import BindError
from meshlib.contract.listen import address_of
from meshlib.telemetry._tally import DURATION_BUCKETS, Durations, Total

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from meshlib._cluster_state import ClusterState

__all__ = ["DURATION_BUCKETS", "HTTP_METHODS", "OTHER", "MeshMetrics", "caller_label",
           "counting_codec"]

#: Series of each kind (client calls, server calls, byte totals) a Mesh keeps; the
#: OpenTelemetry SDK's default cardinality limit.
_MAX_SERIES = 2_000
#: The label value of what is not on a known list (an HTTP method, an unregistered
#: gRPC method, a byte total past the cap).
OTHER = "_OTHER"
#: The HTTP methods recorded as they are (RFC 9110 and PATCH), each mapped to itself:
#: ``HTTP_METHODS.get(method, OTHER)`` folds the rest, with no allocation.
HTTP_METHODS = {m: m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT",
                               "OPTIONS", "TRACE", "PATCH")}


def caller_label(principal: str | None) -> str:
    """``spiffe://td/ns/shop/sa/frontend`` → ``shop/frontend``; None → ``unknown``;
    an ID of another shape → ``_OTHER``."""
    if principal is None:
        return "unknown"
    _, _, path = principal.removeprefix("spiffe://").partition("/")
    parts = path.split("/")  # ns/<ns>/sa/<sa>
    if len(parts) == 4 and parts[0] == "ns" and parts[2] == "sa":
        return f"{parts[1]}/{parts[3]}"
    return OTHER


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
        self.source_service = source_service or "unknown"
        self._clusters = clusters
        self._client: dict[tuple[str, str, str, str], Durations] = {}
        self._bytes: dict[tuple[str, str, str], tuple[Total, Total]] = {}
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
        self._registry: CollectorRegistry | None = None
        self._server: tuple[Any, Any] | None = None  # requests counter, duration histogram
        if registry is not None:
            self._expose(registry)

    @property
    def registry(self) -> CollectorRegistry:
        """The Prometheus registry holding these metrics, made (prometheus_client
        imported) on first use: a client that is never scraped pays for neither."""
        return self._registry or self._exposed()[0]

    def _exposed(self) -> tuple[CollectorRegistry, tuple[Any, Any]]:
        """The registry and the server series, made once."""
        with self._lock:
            if self._registry is None:
                from prometheus_client import CollectorRegistry

                self._expose(CollectorRegistry())
        return self._registry, self._server  # type: ignore[return-value]

    def _expose(self, registry: CollectorRegistry) -> None:
        from meshlib.telemetry._exposition import expose

        self._server = expose(registry, self, self._clusters)
        self._registry = registry

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``host:port`` (0: any free port) from a daemon thread;
        returns the port. A busy port raises :class:`~meshlib.contract.BindError`."""
        from prometheus_client import start_http_server

        try:
            server, _ = start_http_server(port, host, registry=self.registry)
        except OSError as err:
            raise BindError.from_os_error(address_of(host, port), err,
                                          what="serve metrics") from None
        return int(server.server_port)

    def client_series(self, destination: str, route: str, backend: str, code: str
                      ) -> Durations:
        """The series a finished client call is added to (``code``: gRPC code name
        or HTTP status); ``add(seconds, retries)`` records one call."""
        key = (destination, route, backend, code)
        series = self._client.get(key)
        if series is None:
            with self._lock:
                series = self._client.get(key)
                if series is None:
                    if len(self._client) >= _MAX_SERIES:
                        _drop_oldest(self._client)
                    series = self._client[key] = Durations(DURATION_BUCKETS)
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
            series = self._server_series(key)
        series[0].inc()
        series[1].observe(seconds)

    def _server_series(self, key: tuple[str, str, str, str]) -> tuple[Any, Any]:
        """The counter and histogram children of a new server label set; at the cap,
        the oldest quarter goes first, out of the registry too."""
        requests, duration = self._server or self._exposed()[1]
        with self._lock:
            series = self._series.get(key)
            if series is None:
                if len(self._series) >= _MAX_SERIES:
                    dropped = _drop_oldest(self._series)
                    kept = {k[:3] for k in self._series}  # the histogram has no caller
                    for old in dropped:
                        with contextlib.suppress(KeyError):
                            requests.remove(*old)
                    for triple in {old[:3] for old in dropped} - kept:
                        with contextlib.suppress(KeyError):
                            duration.remove(*triple)
                series = self._series[key] = (requests.labels(*key),
                                              duration.labels(*key[:3]))
        return series

    def byte_counters(self, side: str, service: str, method: str
                      ) -> tuple[Callable[[float], None], Callable[[float], None]]:
        """The ``add`` of the request and response byte totals of one method
        (``side``: ``client`` or ``server``). Past ``_MAX_SERIES`` totals, a new
        method counts into one ``(side, _OTHER, _OTHER)`` pair: adders already handed
        out stay live."""
        key = (side, service, method)
        pair = self._bytes.get(key)
        if pair is None:
            with self._lock:
                pair = self._bytes.get(key)
                if pair is None:
                    if len(self._bytes) >= _MAX_SERIES:
                        key = (side, OTHER, OTHER)
                        pair = self._bytes.get(key)
                    if pair is None:
                        pair = self._bytes[key] = (Total(), Total())
        return pair[0].add, pair[1].add


def _drop_oldest(series: dict[Any, Any]) -> list[Any]:
    """Remove the oldest quarter of ``series`` (insertion order); returns their keys."""
    dropped = list(islice(series, max(len(series) // 4, 1)))
    for key in dropped:
        del series[key]
    return dropped


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
