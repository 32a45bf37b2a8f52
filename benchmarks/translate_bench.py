"""Translation + snapshot build for a large mesh: time and peak memory.

    .venv/bin/python benchmarks/translate_bench.py [--services 1000] [--endpoints 10]

Reports, for one node group (proxyless gRPC): YAML load, translation, snapshot build
(serialize + hash + consistency check), each the median of several rounds; the
resource counts; peak traced Python memory of one full build (tracemalloc, separate
pass) and the process RSS.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mesh_gen

from xds_server.cache import Snapshot
from xds_server.node import NodeGroup
from xds_server.resources import short_name
from xds_server.snapshot_builder import SnapshotBuilder
from xds_server.sources.yaml_loader import ConfigLoader, load_model
from xds_server.translate import build_resources


def timed(fn, rounds: int):  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), result


def incremental(config: Path, rounds: int) -> None:
    """What a reload costs after a one-route edit: ConfigLoader + SnapshotBuilder."""
    loader, builder = ConfigLoader(config), SnapshotBuilder()
    for kind in ("grpc", "envoy"):
        group = NodeGroup(kind=kind)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        builder.build(loader.load(), group)
        first = time.perf_counter() - t0
        loads, builds = [], []
        for r in range(rounds * 2):
            (config / "routes.yaml").write_text(mesh_gen.route_yaml(10 + r))
            t0 = time.perf_counter()
            model = loader.load()
            t1 = time.perf_counter()
            builder.build(model, group)
            loads.append(t1 - t0)
            builds.append(time.perf_counter() - t1)
        print(f"[{kind}] incremental: first load+build {first * 1000:.1f} ms; after a route "
              f"edit: reload median {statistics.median(loads) * 1000:.1f} ms, "
              f"snapshot median {statistics.median(builds) * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rss0 = psutil.Process().memory_info().rss
    with tempfile.TemporaryDirectory() as tmp:
        mesh_gen.write(Path(tmp), args.services, args.endpoints)
        load_med, load_min, model = timed(lambda: load_model(Path(tmp)), max(2, args.rounds // 2))
        print(f"mesh: {args.services} services x {args.endpoints} endpoints")
        print(f"yaml load -> model:      median {load_med * 1000:8.1f} ms"
              f"  (min {load_min * 1000:.1f})")
        incremental(Path(tmp), args.rounds)
    for kind in ("grpc", "envoy"):
        group = NodeGroup(kind=kind)  # type: ignore[arg-type]
        tr_med, tr_min, resources = timed(lambda g=group: build_resources(model, g), args.rounds)
        sn_med, sn_min, snap = timed(lambda r=resources: Snapshot.from_messages(r), args.rounds)
        ck_med, _, _ = timed(snap.check_consistent, args.rounds)
        counts = ", ".join(f"{short_name(t)} {len(v)}" for t, v in resources.items())
        print(f"[{kind}] resources: {counts}")
        print(f"[{kind}] translate:         median {tr_med * 1000:8.1f} ms"
              f"  (min {tr_min * 1000:.1f})")
        print(f"[{kind}] snapshot (serialize+hash): median {sn_med * 1000:8.1f} ms"
              f"  (min {sn_min * 1000:.1f})")
        print(f"[{kind}] consistency check:      median {ck_med * 1000:8.1f} ms")
    group = NodeGroup(kind="grpc")
    tracemalloc.start()
    Snapshot.from_messages(build_resources(model, group))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = psutil.Process().memory_info().rss
    print(f"peak traced memory of one translate+snapshot: {peak / 2**20:.1f} MiB")
    print(f"process RSS: {rss / 2**20:.1f} MiB (grew {(rss - rss0) / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
