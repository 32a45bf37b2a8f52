"""Golden metrics of a Mesh, Prometheus-compatible, in a registry of its own.

Server side (``mesh.server()``): one request counter and one duration histogram, by
destination service, method, response code and — for the counter — the caller's
identity (``ns/sa``, or ``unknown`` for a plaintext caller). Label sets are bounded:
no per-endpoint address, and callers are service accounts, not pods.

A call's series are looked up once per distinct label set and kept, so recording is
one ``inc`` and one ``observe`` (about 2 µs), not a ``labels()`` lookup per call.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from meshlib.security._peer import peer_principal

__all__ = ["DURATION_BUCKETS", "MeshMetrics"]

#: Seconds: sub-millisecond loopback calls up to slow ones.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)
_MAX_SERIES = 10_000
_OK = grpc.StatusCode.OK


def _caller(context: Any) -> str:
    principal = peer_principal(context)
    if principal is None:
        return "unknown"
    _, _, path = principal.removeprefix("spiffe://").partition("/")
    parts = path.split("/")  # ns/<ns>/sa/<sa>
    return f"{parts[1]}/{parts[3]}" if len(parts) == 4 else principal


class MeshMetrics:
    """The metrics of one Mesh. ``serve(port)`` exposes them at ``/metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
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

    def record_server(self, service: str, method: str, code: grpc.StatusCode,
                      caller: str, seconds: float) -> None:
        key = (service, method, code.name, caller)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= _MAX_SERIES:
                self._series.clear()
            series = self._series[key] = (
                self.server_requests.labels(service, method, code.name, caller),
                self.server_duration.labels(service, method, code.name))
        series[0].inc()
        series[1].observe(seconds)

    # ------------------------------------------------------------ handler wrappers

    def server_wrappers(self, service: str, method: str) -> dict[str, Callable[..., Any]]:
        """The four ``rewrap_handler`` wrappers that time a handler of ``method``."""
        record = self.record_server

        def done(context: Any, started: float, code: grpc.StatusCode | None) -> None:
            if code is None:
                code = _code_of(context)
            record(service, method, code, _caller(context), time.perf_counter() - started)

        def plain(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(behaviour)
            def run(request: Any, context: Any) -> Any:
                started = time.perf_counter()
                try:
                    response = behaviour(request, context)
                except BaseException:
                    done(context, started, None)
                    raise
                done(context, started, _code_of(context, _OK))
                return response
            return run

        def generator(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(behaviour)
            def run(request: Any, context: Any) -> Iterator[Any]:
                started = time.perf_counter()
                try:
                    yield from behaviour(request, context)
                except BaseException:
                    done(context, started, None)
                    raise
                done(context, started, _code_of(context, _OK))
            return run

        def coroutine(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(behaviour)
            async def run(request: Any, context: Any) -> Any:
                started = time.perf_counter()
                try:
                    response = await behaviour(request, context)
                except BaseException:
                    done(context, started, None)
                    raise
                done(context, started, _code_of(context, _OK))
                return response
            return run

        def async_gen(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(behaviour)
            async def run(request: Any, context: Any) -> AsyncIterator[Any]:
                started = time.perf_counter()
                try:
                    async for response in behaviour(request, context):
                        yield response
                except BaseException:
                    done(context, started, None)
                    raise
                done(context, started, _code_of(context, _OK))
            return run

        return {"plain": plain, "generator": generator, "coroutine": coroutine,
                "async_gen": async_gen}


def _code_of(context: Any, default: grpc.StatusCode = grpc.StatusCode.UNKNOWN
             ) -> grpc.StatusCode:
    """The code a handler set (``context.set_code`` or ``abort``), else ``default``."""
    try:
        code = context.code()
    except Exception:  # a context without code(): older grpcio
        return default
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return code
    for status in grpc.StatusCode:  # aio contexts may report the raw integer
        if status.value[0] == code:
            return status
    return default
