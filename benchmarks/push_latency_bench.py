"""File change → last of 100 ADS clients receiving the update.

    .venv/bin/python benchmarks/push_latency_bench.py [--clients 100] [--rounds 20]

Starts the real `meshctl control-plane` process on a generated mesh (1,000 Services ×
10 endpoints by default), opens N state-of-the-world ADS streams as proxyless gRPC
nodes (each subscribes to svc-0's Listener, RouteConfiguration, Clusters and
Endpoints and ACKs every response, as gRPC does), then rewrites the GRPCRoute's
weights on disk each round and measures until every stream has the new RDS version.
Reports p50/p99 of the time to the last client and to each client, the control
plane's RSS, and the means of its own stage histograms.
``BENCH_CP_PREFIX="-m cProfile -o /tmp/cp.prof"`` profiles the control plane.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import psutil
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mesh_gen

LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTE = "svc-0.default.svc.cluster.local:50051"
CLUSTERS = [f"outbound|50051||svc-{i}.default.svc.cluster.local" for i in (1, 2)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


class Client:
    """One raw SotW ADS stream that ACKs everything and timestamps RDS updates."""

    def __init__(self, index: int) -> None:
        meta = struct_pb2.Struct()
        meta.update({"NAMESPACE": "default"})
        self.node = base_pb2.Node(id=f"bench-{index}", metadata=meta,
                                  user_agent_name="bench")
        self.queue: asyncio.Queue = asyncio.Queue()
        self.rds_version = ""
        self.rds_seen: dict[str, float] = {}
        self.ready = asyncio.Event()

    async def requests(self):  # type: ignore[no-untyped-def]
        first = True
        for type_url, names in ((LDS, [ROUTE]), (RDS, [ROUTE]), (CDS, CLUSTERS), (EDS, CLUSTERS)):
            yield discovery_pb2.DiscoveryRequest(
                node=self.node if first else None, type_url=type_url, resource_names=names)
            first = False
        while True:
            yield await self.queue.get()

    async def run(self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub) -> None:
        names = {LDS: [ROUTE], RDS: [ROUTE], CDS: CLUSTERS, EDS: CLUSTERS}
        async for resp in stub.StreamAggregatedResources(self.requests()):
            now = time.time()
            if resp.type_url == RDS:
                if resp.version_info != self.rds_version:
                    self.rds_seen[resp.version_info] = now
                self.rds_version = resp.version_info
                self.ready.set()
            self.queue.put_nowait(discovery_pb2.DiscoveryRequest(
                type_url=resp.type_url, version_info=resp.version_info,
                response_nonce=resp.nonce, resource_names=names.get(resp.type_url, [])))


async def bench(args: argparse.Namespace, config: Path, xds: str, cp: psutil.Process) -> None:
    channel = grpc.aio.insecure_channel(xds)
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    clients = [Client(i) for i in range(args.clients)]
    tasks = [asyncio.create_task(c.run(stub)) for c in clients]
    await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), 60)
    print(f"{args.clients} ADS streams subscribed; control plane RSS "
          f"{cp.memory_info().rss / 2**20:.1f} MiB")
    last, every = [], []
    for r in range(args.rounds):
        before = clients[0].rds_version
        await asyncio.sleep(0.3)
        t0 = time.time()
        tmp = config / ".routes.tmp"
        tmp.write_text(mesh_gen.route_yaml(10 + r % 80))  # a new version every round
        os.rename(tmp, config / "routes.yaml")
        deadline = time.monotonic() + 30
        while any(c.rds_version in ("", before) for c in clients):
            if time.monotonic() > deadline:
                raise TimeoutError("clients did not get the update in 30 s")
            await asyncio.sleep(0.001)
        times = [c.rds_seen[c.rds_version] - t0 for c in clients]
        last.append(max(times))
        every.extend(times)
    for t in tasks:
        t.cancel()
    await channel.close()
    ms = 1000
    print(f"file write -> last of {args.clients} clients: p50 {pct(last, 50) * ms:.1f} ms, "
          f"p99 {pct(last, 99) * ms:.1f} ms, max {max(last) * ms:.1f} ms ({args.rounds} rounds)")
    print(f"file write -> each client:            p50 {pct(every, 50) * ms:.1f} ms, "
          f"p99 {pct(every, 99) * ms:.1f} ms, mean {statistics.mean(every) * ms:.1f} ms")
    print(f"control plane RSS after: {cp.memory_info().rss / 2**20:.1f} MiB")


def report_stages(url: str) -> None:
    """Where the time goes, from the control plane's own histograms (means)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=5).read().decode()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith(("_sum", "_count")):
                label = s.labels.get("type")
                key = s.name + (f"{{{label}}}" if label else "")
                sums[key] = s.value
    for stage, name in (("change seen -> snapshots set", "meshlib_config_reload_seconds"),
                        ("snapshot built -> RDS sent", "meshlib_xds_push_latency_seconds")):
        suffix = "{RDS}" if "push" in name else ""
        count = sums.get(f"{name}_count{suffix}", 0)
        if count:
            mean = sums[f"{name}_sum{suffix}"] / count * 1000
            print(f"  control plane stage, {stage}: mean {mean:.1f} ms over {count:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mesh"
        mesh_gen.write(config, args.services, args.endpoints)
        xds_port, admin_port = free_port(), free_port()
        proc = subprocess.Popen(
            [sys.executable, *os.environ.get("BENCH_CP_PREFIX", "").split(),
             "-m", "meshctl.cli", "control-plane", "--config", str(config),
             "--xds-address", f"127.0.0.1:{xds_port}",
             "--admin-address", f"127.0.0.1:{admin_port}"],
            cwd=Path(__file__).resolve().parents[1], stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=1)
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("control plane did not start") from None
                    time.sleep(0.1)
            print(f"mesh: {args.services} services x {args.endpoints} endpoints")
            asyncio.run(bench(args, config, f"127.0.0.1:{xds_port}", psutil.Process(proc.pid)))
            report_stages(f"http://127.0.0.1:{admin_port}/metrics")
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
