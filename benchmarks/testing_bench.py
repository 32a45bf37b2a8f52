"""What meshlib's pytest plugin costs a test suite.

* ``pytest startup``: a pytest session collecting one trivial test, with the plugin
  (loaded by its entry point) and with ``-p no:meshlib``, interleaved, several rounds;
  the plugin is imported by every session of a project that installs meshlib.
* fixture setup: a fresh ``MeshControlPlane`` (the ``mesh_control_plane`` fixture),
  a gRPC service of 2 replicas (``mesh_service``), a client's first call, one live edit
  and ``wait_synced`` until the client acknowledged it, and teardown.

    python benchmarks/testing_bench.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GET = "/demo.Reviews/Get"


def pytest_session(with_plugin: bool, directory: Path) -> float:
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(directory)]
    if not with_plugin:
        args[3:3] = ["-p", "no:meshlib"]
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, cwd=directory)
    return time.perf_counter() - start


def fixtures_once() -> dict[str, float]:
    from meshlib.testing import MeshControlPlane, MeshServices
    from meshlib.testing import config as c

    times: dict[str, float] = {}
    t = time.perf_counter()
    cp = MeshControlPlane()
    times["control plane start"] = time.perf_counter() - t
    services = MeshServices(cp)
    t = time.perf_counter()
    services("reviews", {GET: lambda request, context: b"ok"}, replicas=2)
    times["service, 2 replicas"] = time.perf_counter() - t
    mesh = cp.mesh("frontend")
    t = time.perf_counter()
    get = mesh.channel("reviews").unary_unary(GET)
    get(b"", timeout=5)
    times["client first call"] = time.perf_counter() - t
    t = time.perf_counter()
    cp.apply(c.traffic_policy("reviews", timeout="1s"))
    cp.wait_synced()
    times["apply + wait_synced"] = time.perf_counter() - t
    t = time.perf_counter()
    services.close()
    cp.close()
    times["teardown"] = time.perf_counter() - t
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "test_trivial.py").write_text("def test_nothing():\n    pass\n")
        pytest_session(True, directory)  # warm the file cache
        with_plugin, without = [], []
        for i in range(args.rounds):
            order = (True, False) if i % 2 == 0 else (False, True)
            for plugin in order:
                (with_plugin if plugin else without).append(pytest_session(plugin, directory))
    ratios = [a / b for a, b in zip(with_plugin, without, strict=True)]
    print(f"pytest startup, {args.rounds} rounds interleaved (median):")
    print(f"  with meshlib's plugin   {statistics.median(with_plugin) * 1000:7.1f} ms")
    print(f"  -p no:meshlib           {statistics.median(without) * 1000:7.1f} ms")
    print(f"  ratio (paired median)   {statistics.median(ratios):7.3f}")
    rows: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, seconds in fixtures_once().items():
            rows.setdefault(name, []).append(seconds)
    print(f"fixture setup, {args.rounds} rounds (median / max):")
    for name, values in rows.items():
        print(f"  {name:<24} {statistics.median(values) * 1000:7.1f} ms "
              f"/ {max(values) * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
