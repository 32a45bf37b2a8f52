"""meshlib with mTLS side by side with bare grpcio with static mTLS, as ratios.

    .venv/bin/python benchmarks/mtls_bench.py [--calls 250] [--rounds 16]

The real `meshctl control-plane` (with its CA and a token file), and two server
processes answering ``/demo.Reviews/Get``:

* a bare ``grpc.server`` with static ``ssl_server_credentials`` (client certificates
  required), certificates issued once by the mesh CA;
* a meshlib ``mesh.server()`` in STRICT mode: rotating certificates from the CA,
  SPIFFE identity, the authorization interceptor.

Rows, interleaved and rotated round by round: a bare grpcio sync channel with static
mTLS credentials (checking the server's identity name, as meshlib does) to the bare
server, and a meshlib sync channel to the meshlib server. Latency p50/p99 per call,
CPU per call in this process. Then: how many secure channels (TLS handshakes) a
client opens per certificate rotation under load, and the time a new Mesh takes to
get its first certificate.
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
from _harness import (
    METHOD,
    ROOT,
    Series,
    free_port,
    measure_sync,
    rotated,
    service_yaml,
    start_control_plane,
    stop,
)

TOKENS = {"reviews": "reviews-bench-token-0123", "bench": "bench-client-token-0123"}
POLICY = """---
apiVersion: meshlib.dev/v1alpha1
kind: AccessPolicy
metadata: {name: reviews, namespace: default}
spec:
  targetRef: {kind: Service, name: reviews}
  mtls: {mode: STRICT}
  rules:
  - action: ALLOW
    from: [{namespaces: [default]}]
"""


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"ok"


def _handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler("demo.Reviews", {
        "Get": grpc.unary_unary_rpc_method_handler(_echo)})


def serve_child(kind: str, port: int, arg: str) -> None:
    """``--serve bare PORT CERT_DIR`` or ``--serve meshlib PORT XDS_ADDRESS``."""
    from concurrent import futures

    if kind == "bare":
        d = Path(arg)
        creds = grpc.ssl_server_credentials(
            [((d / "key.pem").read_bytes(), (d / "cert.pem").read_bytes())],
            root_certificates=(d / "ca.pem").read_bytes(), require_client_auth=True)
        server = grpc.server(futures.ThreadPoolExecutor(16))
        server.add_secure_port(f"127.0.0.1:{port}", creds)
    else:
        import meshlib

        mesh = meshlib.Mesh(arg, service="reviews", token=TOKENS["reviews"])
        server = mesh.server("reviews", port=port, host="127.0.0.1")
    server.add_generic_rpc_handlers((_handlers(),))
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def start(tmp: Path) -> tuple[list[subprocess.Popen], str, int, int, Path]:
    from meshlib.contract import SpiffeId
    from meshlib.security import request_certificate, write_files

    mesh_port, bare_port = free_port(), free_port()
    config = tmp / "mesh"
    config.mkdir()
    (config / "mesh.yaml").write_text(service_yaml("reviews", mesh_port) + POLICY)
    tokens = tmp / "tokens.yaml"
    tokens.write_text("tokens:\n" + "".join(
        f"- serviceAccount: default/{sa}\n  token: {t}\n" for sa, t in TOKENS.items()))
    tokens.chmod(0o600)
    cp, xds, _ = start_control_plane(config, "--ca-dir", str(tmp / "ca"),
                                     "--token-file", str(tokens))
    for sa in ("reviews", "bench"):
        cert = asyncio.run(request_certificate(xds, SpiffeId("cluster.local", "default", sa),
                                               TOKENS[sa]))
        write_files(tmp / sa, cert)
    procs = [cp]
    for kind, port, arg in (("bare", bare_port, str(tmp / "reviews")),
                            ("meshlib", mesh_port, xds)):
        proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port), arg],
                                stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        procs.append(proc)
    return procs, xds, mesh_port, bare_port, tmp / "bench"


def run(args: argparse.Namespace, xds: str, bare_port: int, certs: Path) -> None:
    import meshlib
    from meshlib.contract import SpiffeId

    server_name = SpiffeId("cluster.local", "default", "reviews").dns_name
    creds = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes(),
                                         (certs / "key.pem").read_bytes(),
                                         (certs / "cert.pem").read_bytes())
    bare = grpc.secure_channel(f"127.0.0.1:{bare_port}", creds,
                               options=[("grpc.ssl_target_name_override", server_name)])
    mesh = meshlib.Mesh(xds, service="bench", token=TOKENS["bench"])
    bare_get = bare.unary_unary(METHOD, _registered_method=True)
    mesh_get = mesh.channel("reviews").unary_unary(METHOD)
    rows: dict[str, Callable[[], object]] = {
        "bare grpcio mTLS": lambda: bare_get(b"", timeout=5),
        "meshlib mTLS": lambda: mesh_get(b"", timeout=5),
    }
    for call in rows.values():
        for _ in range(200):
            call()
    series = {name: Series() for name in rows}
    for round_no in range(args.rounds):
        for name in rotated(list(rows), round_no):
            series[name].add(*measure_sync(rows[name], args.calls))
    print(f"\n{args.rounds} rounds × {args.calls} sequential unary calls per row, "
          "interleaved; ratios against bare grpcio with static mTLS")
    for name in rows:
        print(series[name].line(name, series["bare grpcio mTLS"], width=18))
    mesh.close()
    bare.close()

    # Handshakes per rotation: a client whose certificate lives 4 s (rotating every
    # ~2 s) calls for 12 s; count the secure channels it opened.
    rotating = meshlib.Mesh(xds, service="bench", token=TOKENS["bench"], cert_ttl=4)
    call = rotating.channel("reviews").unary_unary(METHOD)
    stop, calls = time.monotonic() + args.rotation_seconds, 0
    while time.monotonic() < stop:
        call(b"", timeout=5)
        calls += 1
    rotations = rotating.certificates.rotations  # type: ignore[union-attr]
    opened = rotating.clients.pool.handshake_channels
    print(f"rotation: {calls} calls in {args.rotation_seconds:.0f} s, {rotations} rotations, "
          f"{opened} secure channels opened (1 endpoint): "
          f"{opened / max(1, rotations + 1):.2f} handshakes per certificate, "
          f"{opened / calls * 1000:.2f} per 1,000 calls")
    rotating.close()

    firsts = []
    for _ in range(5):
        started = time.perf_counter()
        m = meshlib.Mesh(xds, service="bench", token=TOKENS["bench"])
        firsts.append((time.perf_counter() - started, m.first_certificate_seconds or 0.0))
        m.close()
    print("first certificate at start-up: Mesh() returns in "
          f"{statistics.median(f[0] for f in firsts) * 1000:.1f} ms median, of which the "
          f"key + CSR + CA round trip {statistics.median(f[1] for f in firsts) * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--rotation-seconds", type=float, default=12.0)
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "ARG"))
    args = parser.parse_args()
    if args.serve:
        serve_child(args.serve[0], int(args.serve[1]), args.serve[2])
        return
    with tempfile.TemporaryDirectory() as tmp:
        procs, xds, _, bare_port, certs = start(Path(tmp))
        try:
            run(args, xds, bare_port, certs)
        finally:
            stop(procs)


if __name__ == "__main__":
    main()
