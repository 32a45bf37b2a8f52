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
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    METHOD,
    ROOT,
    ClientRows,
    Series,
    client_table,
    rotated,
    rss_mib,
    start_reviews_mesh,
    stop,
)


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
        mesh = start_reviews_mesh(Path(tmpdir), args.services)
        try:
            os.environ.update(mesh.env)
            run(meshlib, args, mesh.backend_port, mesh.xds_address)
        finally:
            stop(mesh.procs)


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
    rows = ClientRows(meshlib, backend_port, xds_address)
    series = {name: Series() for name in rows.calls}
    rates: dict[str, list[float]] = {name: [] for name in ClientRows.AIO}
    for round_no in range(args.rounds):
        # Each round starts with a different row, so no row always runs first.
        for names in (ClientRows.SYNC, ClientRows.AIO):
            for name in rotated(list(names), round_no):
                series[name].add(*rows.measure(name, args.calls))
        for name in rotated(list(rates), round_no):
            rates[name].append(rows.rate(name, args.calls * 2))

    print(f"\n{args.rounds} rounds × {args.calls} sequential unary calls per row, interleaved;"
          " ratios against the bare row of the same kind")
    print("\n".join(client_table(series, rates)))

    # Memory, in a fresh process: grpc and meshlib imported and a plain channel used
    # first, so the number is what a Mesh with N services subscribed adds.
    out = subprocess.run([sys.executable, __file__, "--rss-child", xds_address,
                          "--services", str(args.services)], capture_output=True, text=True,
                         check=True, timeout=120)
    print(out.stdout.strip())
    rows.close()


if __name__ == "__main__":
    main()
