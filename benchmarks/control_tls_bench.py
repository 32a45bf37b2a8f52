"""What a secure control channel costs (issue 12): the control plane in-process
(``meshlib.testing.MeshControlPlane``), plaintext and ``tls=True`` (ADS over mTLS,
authenticated by the Mesh's certificate; the CA over TLS on its own port) side by
side, interleaved, several rounds.

* first certificate: ``Mesh(token=...)`` start to its first workload certificate
  (``mesh.first_certificate_seconds``), and the Mesh's first routed call after it
  (secure: the ADS stream waits for the certificate, then connects over mTLS);
* push: ``apply`` of an edit until every client has ACKed it (``wait_synced``), p50/p99.

    python benchmarks/control_tls_bench.py [--rounds 5] [--pushes 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GET = "/demo.Reviews/Get"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def one_round(tls: bool, pushes: int) -> dict[str, list[float]]:
    from meshlib.testing import MeshControlPlane, MeshServices
    from meshlib.testing import config as c

    out: dict[str, list[float]] = {"first certificate": [], "first call": [], "push": []}
    with MeshControlPlane(tls=tls) as cp:
        services = MeshServices(cp)
        services("reviews", {GET: lambda request, context: b"ok"}, identity=True)
        start = time.perf_counter()
        mesh = cp.mesh("frontend", identity=True)
        assert mesh.first_certificate_seconds is not None
        out["first certificate"].append(mesh.first_certificate_seconds)
        mesh.channel("reviews").unary_unary(GET)(b"", timeout=10)
        out["first call"].append(time.perf_counter() - start)
        for i in range(pushes):
            t = time.perf_counter()
            cp.apply(c.traffic_policy("reviews", timeout=f"{1000 + i % 2}ms"))
            cp.wait_synced()
            out["push"].append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pushes", type=int, default=200)
    args = parser.parse_args()
    one_round(True, 5)  # warm imports
    results: dict[bool, dict[str, list[float]]] = {False: {}, True: {}}
    ratios: dict[str, list[float]] = {}
    for i in range(args.rounds):
        order = (False, True) if i % 2 == 0 else (True, False)
        medians: dict[bool, dict[str, float]] = {}
        for tls in order:
            got = one_round(tls, args.pushes)
            medians[tls] = {k: statistics.median(v) for k, v in got.items()}
            for key, values in got.items():
                results[tls].setdefault(key, []).extend(values)
        for key in medians[True]:
            ratios.setdefault(key, []).append(medians[True][key] / medians[False][key])
    print(f"control channel, {args.rounds} rounds interleaved, {args.pushes} pushes each")
    print(f"{'':<20}{'plaintext p50/p99 ms':>24}{'TLS p50/p99 ms':>20}{'TLS/plain':>11}")
    for key in ("first certificate", "first call", "push"):
        plain, tls = results[False][key], results[True][key]
        print(f"{key:<20}{pct(plain, 50) * 1e3:>12.2f} /{pct(plain, 99) * 1e3:>8.2f}"
              f"{pct(tls, 50) * 1e3:>10.2f} /{pct(tls, 99) * 1e3:>8.2f}"
              f"{statistics.median(ratios[key]):>11.3f}")


if __name__ == "__main__":
    main()
