"""meshlib's client pipeline side by side with bare grpcio, interleaved, as ratios.

    .venv/bin/python benchmarks/client_bench.py [--calls 2000] [--rounds 5]

One backend process (examples/reviews_server.py) and the real `meshctl control-plane`
process. Rows, each run for ``--calls`` sequential unary calls per round, the rows
interleaved round by round so machine drift hits them alike:

* bare grpcio sync channel to the backend;
* gRPC's native ``xds:///reviews`` (bootstrapped at our control plane);
* meshlib sync channel (the full default pipeline: route, weighted pick, endpoint
  pick, breaker/limits/outlier accounting, retry policy armed);
* bare grpc.aio channel;
* meshlib aio channel.

Ratios are medians of per-round ratios against the bare row of the same kind (sync or
aio). meshlib's endpoint channels set ``grpc.enable_retries=0`` (meshlib retries
itself), which makes each call a little cheaper than a default grpcio channel.

Latency is per call (p50/p99, µs); CPU is this process's CPU time per call (µs), all
threads included (gRPC's, and meshlib's xDS thread). A concurrent row keeps 32 aio
calls in flight and reports calls/s. Last, the RSS meshlib adds in a process that
subscribes to 50 services (one call to each).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import psutil

ROOT = Path(__file__).resolve().parents[1]
METHOD = "/demo.Reviews/Get"
POLICY = """---
apiVersion: meshlib.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: reviews, namespace: default}
spec:
  targetRef: {kind: Service, name: reviews}
  retries: {attempts: 3, retryOn: [UNAVAILABLE]}
  outlierDetection: {consecutiveFailures: 5}
  circuitBreaker: {consecutiveFailures: 5, openDuration: 10s}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def service_yaml(name: str, port: int) -> str:
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: grpc, port: 50051, targetPort: grpc, appProtocol: grpc}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: grpc, port: {port}, protocol: TCP, appProtocol: grpc}}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {{ready: true}}
"""


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


def start_processes(tmp: Path, services: int) -> tuple[list[subprocess.Popen], int, str]:
    backend_port, xds_port, admin_port = free_port(), free_port(), free_port()
    backend = subprocess.Popen(
        [sys.executable, str(ROOT / "examples/reviews_server.py"), "--name", "reviews-0",
         "--port", str(backend_port)], stdout=subprocess.DEVNULL)
    config = tmp / "mesh"
    config.mkdir()
    text = service_yaml("reviews", backend_port) + POLICY
    text += "".join(service_yaml(f"svc-{i}", backend_port) for i in range(services))
    (config / "mesh.yaml").write_text(text)
    cp = subprocess.Popen(
        [sys.executable, "-m", "meshctl.cli", "control-plane", "--config", str(config),
         "--xds-address", f"127.0.0.1:{xds_port}",
         "--admin-address", f"127.0.0.1:{admin_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    wait_http(f"http://127.0.0.1:{admin_port}/readyz")
    address = f"127.0.0.1:{xds_port}"
    bootstrap = tmp / "bootstrap.json"
    subprocess.run([sys.executable, "-m", "meshctl.cli", "bootstrap", "--xds-address",
                    address, "--node-id", "bench-native", "--output", str(bootstrap)],
                   check=True, cwd=ROOT)
    os.environ["GRPC_XDS_BOOTSTRAP"] = str(bootstrap)
    os.environ["GRPC_EXPERIMENTAL_XDS_DATA_ERROR_HANDLING"] = "true"
    return [backend, cp], backend_port, address


def measure_sync(call: Callable[[], object], n: int) -> tuple[list[float], float]:
    latencies = []
    clock = time.perf_counter_ns
    cpu0 = time.process_time()
    for _ in range(n):
        t0 = clock()
        call()
        latencies.append((clock() - t0) / 1000)
    return latencies, (time.process_time() - cpu0) / n * 1e6


async def measure_aio(call: Callable[[], object], n: int) -> tuple[list[float], float]:
    latencies = []
    clock = time.perf_counter_ns
    cpu0 = time.process_time()
    for _ in range(n):
        t0 = clock()
        await call()  # type: ignore[misc]
        latencies.append((clock() - t0) / 1000)
    return latencies, (time.process_time() - cpu0) / n * 1e6


async def concurrent(call: Callable[[], object], total: int, inflight: int) -> float:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()  # type: ignore[misc]

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return total / (time.perf_counter() - start)


def rss_mib() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=250,
                        help="sequential calls per row per round")
    parser.add_argument("--rounds", type=int, default=24,
                        help="rounds; rows alternate within each, so drift hits all")
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--rss-child", metavar="XDS_ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import meshlib

    if args.rss_child:
        rss_child(meshlib, args.rss_child, args.services)
        return

    with tempfile.TemporaryDirectory() as tmpdir:
        procs, backend_port, xds_address = start_processes(Path(tmpdir), args.services)
        try:
            run(meshlib, args, backend_port, xds_address)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)


def rss_child(meshlib, xds_address: str, services: int) -> None:
    """Print the RSS a Mesh adds with ``services`` services subscribed and called."""
    plain = grpc.insecure_channel(xds_address)  # gRPC core up, as in any gRPC service
    grpc.channel_ready_future(plain).result(timeout=10)
    before = rss_mib()
    mesh = meshlib.Mesh(xds_address=xds_address, node_id="bench-rss")
    empty = rss_mib()
    for i in range(services):
        mesh.channel(f"svc-{i}").unary_unary(METHOD)(b"", timeout=10)
    after = rss_mib()
    print(f"RSS: +{empty - before:.1f} MiB for an idle Mesh (xDS thread and stream), "
          f"+{after - before:.1f} MiB with {services} services subscribed and called "
          f"({(after - empty) / services * 1024:.0f} KiB per service)")
    mesh.close()


def run(meshlib, args, backend_port: int, xds_address: str) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    mesh = meshlib.Mesh(xds_address=xds_address, node_id="bench", service="bench")
    bare = grpc.insecure_channel(f"127.0.0.1:{backend_port}")
    native = grpc.insecure_channel("xds:///reviews")
    meshed = mesh.channel("reviews")
    sync_rows: dict[str, Callable[[], object]] = {
        "bare grpcio": bare.unary_unary(METHOD, _registered_method=True),
        "native xds:///": native.unary_unary(METHOD, _registered_method=True),
        "meshlib sync": meshed.unary_unary(METHOD),
    }

    async def aio_setup() -> dict[str, Callable[[], object]]:
        bare_aio = grpc.aio.insecure_channel(f"127.0.0.1:{backend_port}")
        mesh_aio = mesh.aio_channel("reviews")
        return {"bare grpc.aio": bare_aio.unary_unary(METHOD, _registered_method=True),
                "meshlib aio": mesh_aio.unary_unary(METHOD)}

    aio_rows = loop.run_until_complete(aio_setup())
    calls = {name: (lambda mc=mc: mc(b"", timeout=5)) for name, mc in sync_rows.items()}
    acalls = {name: (lambda mc=mc: mc(b"", timeout=5)) for name, mc in aio_rows.items()}
    for call in calls.values():  # warm up: connect, resolve
        for _ in range(200):
            call()
    for call in acalls.values():
        loop.run_until_complete(measure_aio(call, 200))

    lat: dict[str, list[float]] = {n: [] for n in [*calls, *acalls]}
    cpu: dict[str, list[float]] = {n: [] for n in lat}
    p50s: dict[str, list[float]] = {n: [] for n in lat}
    rate: dict[str, list[float]] = {"bare grpc.aio": [], "meshlib aio": []}
    def rotated(items: list, by: int) -> list:
        by %= len(items)
        return items[by:] + items[:by]

    for round_no in range(args.rounds):
        # Each round starts with a different row, so no row always runs first.
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
        for name in rotated(list(rate), round_no):
            rate[name].append(loop.run_until_complete(
                concurrent(acalls[name], args.calls * 2, 32)))

    def row(name: str, base: str) -> str:
        p50, p99 = pct(lat[name], 50), pct(lat[name], 99)
        c = statistics.median(cpu[name])

        def paired(values: dict[str, list[float]]) -> float:
            # The median of per-round ratios: each round's rows ran back to back, so
            # drift between rounds cancels out.
            return statistics.median(a / b for a, b in zip(values[name], values[base],
                                                           strict=True))

        return (f"{name:16} p50 {p50:7.0f} µs  p99 {p99:7.0f} µs  cpu {c:6.0f} µs/call   "
                f"×{paired(p50s):.3f} p50  ×{paired(cpu):.3f} cpu")

    print(f"\n{args.rounds} rounds × {args.calls} sequential unary calls per row, interleaved;"
          " ratios against the bare row of the same kind")
    for name in calls:
        print(row(name, "bare grpcio"))
    for name in acalls:
        print(row(name, "bare grpc.aio"))
    bare_rate = statistics.median(rate["bare grpc.aio"])
    mesh_rate = statistics.median(rate["meshlib aio"])
    print(f"32 in flight (aio): bare {bare_rate:,.0f} calls/s, meshlib {mesh_rate:,.0f} "
          f"calls/s  ×{mesh_rate / bare_rate:.3f}")

    # Memory, in a fresh process: grpc and meshlib imported and a plain channel used
    # first, so the number is what a Mesh with N services subscribed adds.
    out = subprocess.run([sys.executable, __file__, "--rss-child", xds_address,
                          "--services", str(args.services)], capture_output=True, text=True,
                         check=True, timeout=120)
    print(out.stdout.strip())
    mesh.close()
    loop.close()


if __name__ == "__main__":
    main()
