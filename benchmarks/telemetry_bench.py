"""Telemetry's cost, and the httpx mesh client's, side by side, interleaved, as ratios.

    .venv/bin/python benchmarks/telemetry_bench.py [--calls 250] [--rounds 16]

The real ``meshctl control-plane`` process (MeshConfig: tracing sampling 1 %, access
logs off), a gRPC backend process (examples/reviews_server.py) and a plain HTTP
backend process (examples/http/starlette_app.py under uvicorn). This process runs the
clients; an OpenTelemetry SDK ``TracerProvider`` with a batch processor is installed,
as an application exporting traces would have it.

gRPC rows (sequential unary calls): bare grpcio; meshlib with ``telemetry=False``;
meshlib with telemetry on (metrics + tracing at 1 % + propagation); the same two for
grpc.aio. The budget is on client CPU per call: telemetry on vs off ≤ 1.05.

HTTP rows (sequential GETs): plain ``httpx.Client`` to the backend's address, and
``mesh.http_client()`` to ``http://reviews-http/...`` (telemetry on).

Ratios are medians of per-round ratios (rows run back to back in each round, the
order rotated), so drift between rounds cancels out. CPU is this process's CPU time
per call, all threads included.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from client_bench import (
    free_port,
    measure_aio,
    measure_sync,
    pct,
    service_yaml,
    wait_http,
)

ROOT = Path(__file__).resolve().parents[1]
METHOD = "/demo.Reviews/Get"
MESH_CONFIG = """---
apiVersion: meshlib.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  tracing: {sampling: 0.01}
"""


def http_service_yaml(name: str, port: int) -> str:
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: http, appProtocol: http}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP, appProtocol: http}}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {{ready: true}}
"""


def start(tmp: Path) -> tuple[list[subprocess.Popen], int, int, str]:
    grpc_port, http_port, xds_port, admin_port = (free_port() for _ in range(4))
    procs = [
        subprocess.Popen([sys.executable, str(ROOT / "examples/reviews_server.py"),
                          "--name", "reviews-0", "--port", str(grpc_port)],
                         stdout=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, str(ROOT / "examples/http/starlette_app.py"),
                          "--port", str(http_port)], stdout=subprocess.DEVNULL),
    ]
    config = tmp / "mesh"
    config.mkdir()
    (config / "mesh.yaml").write_text(service_yaml("reviews", grpc_port)
                                      + http_service_yaml("reviews-http", http_port)
                                      + MESH_CONFIG)
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "meshctl.cli", "control-plane", "--config", str(config),
         "--xds-address", f"127.0.0.1:{xds_port}",
         "--admin-address", f"127.0.0.1:{admin_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT))
    wait_http(f"http://127.0.0.1:{admin_port}/readyz")
    wait_http(f"http://127.0.0.1:{http_port}/reviews/1")
    return procs, grpc_port, http_port, f"127.0.0.1:{xds_port}"


def install_tracer_provider() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)


def run(args: argparse.Namespace, grpc_port: int, http_port: int, xds: str) -> None:
    import httpx

    import meshlib

    install_tracer_provider()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    on = meshlib.Mesh(xds, node_id="bench-on", service="bench")
    off = meshlib.Mesh(xds, node_id="bench-off", service="bench", telemetry=False)
    bare = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    sync_rows = {
        "bare grpcio": bare.unary_unary(METHOD, _registered_method=True),
        "meshlib telemetry off": off.channel("reviews").unary_unary(METHOD),
        "meshlib telemetry on": on.channel("reviews").unary_unary(METHOD),
    }

    async def aio_rows() -> dict[str, Callable[[], object]]:
        bare_aio = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
        return {"bare grpc.aio": bare_aio.unary_unary(METHOD, _registered_method=True),
                "meshlib aio off": off.aio_channel("reviews").unary_unary(METHOD),
                "meshlib aio on": on.aio_channel("reviews").unary_unary(METHOD)}

    plain_http = httpx.Client()
    mesh_http = on.http_client()
    http_url = f"http://127.0.0.1:{http_port}/reviews/1"
    calls: dict[str, Callable[[], object]] = {
        name: (lambda mc=mc: mc(b"", timeout=5)) for name, mc in sync_rows.items()}
    acalls = {name: (lambda mc=mc: mc(b"", timeout=5))
              for name, mc in loop.run_until_complete(aio_rows()).items()}
    calls["plain httpx"] = lambda: plain_http.get(http_url).raise_for_status()
    calls["mesh httpx"] = lambda: mesh_http.get("http://reviews-http/reviews/1"
                                                ).raise_for_status()
    for call in calls.values():
        for _ in range(200):
            call()
    for call in acalls.values():
        loop.run_until_complete(measure_aio(call, 200))

    names = [*calls, *acalls]
    lat: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    p50s: dict[str, list[float]] = {n: [] for n in names}

    def rotated(items: list, by: int) -> list:
        by %= len(items)
        return items[by:] + items[:by]

    for round_no in range(args.rounds):
        for name, call in rotated(list(calls.items()), round_no):
            latencies, per_call = measure_sync(call, args.calls)
            lat[name] += latencies
            cpu[name].append(per_call)
            p50s[name].append(statistics.median(latencies))
        for name, call in rotated(list(acalls.items()), round_no):
            latencies, per_call = loop.run_until_complete(measure_aio(call, args.calls))
            lat[name] += latencies
            cpu[name].append(per_call)
            p50s[name].append(statistics.median(latencies))

    def paired(values: dict[str, list[float]], name: str, base: str) -> float:
        return statistics.median(a / b for a, b in zip(values[name], values[base],
                                                       strict=True))

    def row(name: str, base: str) -> str:
        return (f"{name:22} p50 {pct(lat[name], 50):6.0f} µs  p99 {pct(lat[name], 99):6.0f} µs"
                f"  cpu {statistics.median(cpu[name]):5.0f} µs/call   "
                f"×{paired(p50s, name, base):.3f} p50  ×{paired(cpu, name, base):.3f} cpu"
                f"  (vs {base})")

    print(f"\n{args.rounds} rounds × {args.calls} sequential calls per row, interleaved")
    print(row("meshlib telemetry off", "bare grpcio"))
    print(row("meshlib telemetry on", "bare grpcio"))
    print(row("meshlib telemetry on", "meshlib telemetry off"))
    print(row("meshlib aio off", "bare grpc.aio"))
    print(row("meshlib aio on", "meshlib aio off"))
    print(row("mesh httpx", "plain httpx"))
    pipeline_only(on, off, args)
    on.close()
    off.close()
    loop.close()


def pipeline_only(on: object, off: object, args: argparse.Namespace) -> None:
    """meshlib's own CPU per call with the endpoint call stubbed out: what telemetry
    adds to the pipeline, without the network's noise."""
    import meshlib._channel

    class Stub:
        def __call__(self, request: bytes, **kwargs: object) -> bytes:
            return b"ok"

    meshlib._channel._Base._callable = lambda self, endpoint: Stub()  # type: ignore
    stubs = {"pipeline off": off.channel("reviews").unary_unary(METHOD),  # type: ignore
             "pipeline on": on.channel("reviews").unary_unary(METHOD)}  # type: ignore
    cpu: dict[str, list[float]] = {name: [] for name in stubs}
    for round_no in range(args.rounds):
        for name, stub in sorted(stubs.items(), reverse=round_no % 2 == 1):
            _, per_call = measure_sync(lambda stub=stub: stub(b"", timeout=5), 20 * args.calls)
            cpu[name].append(per_call)
    off_cpu, on_cpu = statistics.median(cpu["pipeline off"]), statistics.median(cpu["pipeline on"])
    print(f"pipeline only, sync (endpoint call stubbed): telemetry off {off_cpu:.1f} µs/call, "
          f"on {on_cpu:.1f} µs/call: telemetry adds {on_cpu - off_cpu:.1f} µs of CPU per call")

    import meshlib._aio_channel

    class AioStub:
        def __call__(self, request: bytes, **kwargs: object) -> object:
            return _done(b"ok")

    async def _done(value: bytes) -> bytes:
        return value

    meshlib._aio_channel._AioBase._callable = lambda self, endpoint: AioStub()  # type: ignore
    loop = asyncio.new_event_loop()

    async def make() -> dict[str, Callable[[], object]]:
        return {"off": off.aio_channel("reviews").unary_unary(METHOD),  # type: ignore
                "on": on.aio_channel("reviews").unary_unary(METHOD)}  # type: ignore
    astubs = loop.run_until_complete(make())
    acpu: dict[str, list[float]] = {name: [] for name in astubs}
    for round_no in range(args.rounds):
        for name, stub in sorted(astubs.items(), reverse=round_no % 2 == 1):
            _, per_call = loop.run_until_complete(measure_aio(
                lambda stub=stub: stub(b"", timeout=5), 20 * args.calls))
            acpu[name].append(per_call)
    off_cpu, on_cpu = statistics.median(acpu["off"]), statistics.median(acpu["on"])
    print(f"pipeline only, aio: telemetry off {off_cpu:.1f} µs/call, on {on_cpu:.1f} µs/call: "
          f"telemetry adds {on_cpu - off_cpu:.1f} µs of CPU per call")
    loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=16)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmpdir:
        procs, grpc_port, http_port, xds = start(Path(tmpdir))
        try:
            run(args, grpc_port, http_port, xds)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
            time.sleep(0.1)


if __name__ == "__main__":
    main()
