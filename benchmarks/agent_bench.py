"""What ``meshctl agent`` adds to an ADS push (issue 12): a config change until Node's
``@grpc/grpc-js-xds`` ACKs it, three ways, in interleaved rounds:

* direct — Node to the control plane in plaintext (all grpc-js-xds can do alone);
* relay  — Node to an agent, the agent to the control plane in plaintext
  (``--insecure-upstream``): the extra hop alone;
* agent  — Node to an agent, the agent to the control plane over mTLS with the
  workload's certificate (``--cert-dir``): the secure path.

The control plane (the real ``ControlPlane`` and ADS server) runs in this process on
one gRPC server with two ports, plaintext and mTLS (client certificates required);
a push is ``ControlPlane.apply`` of a route with the other weights, timed on the
control plane's loop from the apply to the node's RDS ACK. The agents and Node are
real processes; one Node client is connected at a time. Needs tests/e2e/node's
node_modules (``make test`` installs them).

    python benchmarks/agent_bench.py [--rounds 5] [--pushes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import free_port, pct, stop  # noqa: E402

NODE_DIR = ROOT / "tests" / "e2e" / "node"
TARGET = "xds:///reviews.default.svc.cluster.local:50051"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
MODES = ("direct", "relay", "agent")


class ControlPlaneThread:
    """The control plane on a loop of its own: a plaintext and an mTLS port."""

    def __init__(self, config: Path, cert_dir: Path) -> None:
        from meshlib.contract import SpiffeId
        from meshlib.security import WorkloadCertificate, make_key_and_csr, write_files
        from xds_server.ca import CertificateAuthority, ServingCertificates
        from xds_server.control_plane import ControlPlane
        from xds_server.sources.yaml_loader import ConfigLoader

        self.loader = ConfigLoader(config)
        self.cp = ControlPlane(self.loader.load())
        ca = CertificateAuthority.create()
        self.serving = ServingCertificates(ca, ["localhost", "127.0.0.1"])
        identity = SpiffeId("cluster.local", "default", "bench")
        key_pem, csr_pem = make_key_and_csr(identity)
        issued = ca.issue(csr_pem, identity)
        write_files(cert_dir, WorkloadCertificate.from_pem(key_pem, issued.cert_pem,
                                                           ca.roots_pem()))
        self.acks: dict[str, asyncio.Event] = {}
        self.models = [self.cp.model, self.cp.model]  # the two configs pushes alternate
        self.serving_model = 0
        self.loop = asyncio.new_event_loop()
        self.plain_port, self.mtls_port = free_port(), free_port()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.server = self.run(self._start())

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    async def _start(self) -> grpc.aio.Server:
        from xds_server.server import AdsServer

        base = self.cp.callbacks()

        def ack(stream_id: int, node: Any, type_url: str, version: str) -> None:
            base.on_ack(stream_id, node, type_url, version)
            if type_url == RDS and node.id in self.acks:
                self.acks[node.id].set()

        server = grpc.aio.server()
        AdsServer(self.cp.cache, dataclasses.replace(base, ack=ack)).add_to_server(server)
        server.add_insecure_port(f"127.0.0.1:{self.plain_port}")
        server.add_secure_port(f"127.0.0.1:{self.mtls_port}",
                               self.serving.credentials(require_client_auth=True))
        await server.start()
        return server

    def push(self, node_id: str) -> float:
        """Apply the other model; seconds until ``node_id`` ACKs the new routes."""
        self.serving_model = 1 - self.serving_model
        model = self.models[self.serving_model]

        async def timed() -> float:
            done = self.acks[node_id] = asyncio.Event()
            start = time.perf_counter()
            await self.cp.apply(model)
            await asyncio.wait_for(done.wait(), 10)
            return time.perf_counter() - start

        return float(self.run(timed()))

    def close(self) -> None:
        self.run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)


def write_route(config: Path, v1: int) -> None:
    from meshlib.testing import config as c

    (config / "route.yaml").write_text(c.to_yaml(c.grpc_route(
        "reviews", c.rule({"reviews-v1": v1, "reviews-v2": 100 - v1}))))


def write_mesh(config: Path, port: int) -> None:
    from meshlib.testing import config as c

    config.mkdir()
    text = "".join(c.to_yaml(c.service(name), c.endpoints(name, [f"127.0.0.1:{port}"]))
                   for name in ("reviews", "reviews-v1", "reviews-v2"))
    (config / "services.yaml").write_text(text)
    write_route(config, 100)


def meshctl(*args: str, **kw: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "meshctl.cli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def start_agent(tmp: Path, name: str, *args: str) -> tuple[subprocess.Popen, str]:
    ready = tmp / f"{name}.ready"
    proc = meshctl("agent", "--listen", "127.0.0.1:0", "--ready-file", str(ready), *args)
    for _ in range(300):
        if ready.exists():
            return proc, ready.read_text().strip()
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop([proc])
    raise SystemExit(f"agent {name} did not start")


class NodeClient:
    """tests/e2e/node/xds_client.js, subscribed to reviews."""

    def __init__(self, tmp: Path, address: str, node_id: str) -> None:
        bootstrap = tmp / f"{node_id}.json"
        subprocess.run([sys.executable, "-m", "meshctl.cli", "bootstrap", "--xds-address",
                        address, "--node-id", node_id, "--output", str(bootstrap)],
                       check=True, cwd=ROOT, timeout=60)
        self.proc = subprocess.Popen(
            ["node", str(NODE_DIR / "xds_client.js")], cwd=NODE_DIR, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap)})
        answer = self.send(op="wait_for", target=TARGET, backend="reviews", timeout=20)
        if not answer.get("ok"):
            raise SystemExit(f"node client via {address}: {answer}")

    def send(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.write('{"op": "quit"}\n')
        self.proc.stdin.flush()
        stop([self.proc], timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pushes", type=int, default=100)
    args = parser.parse_args()
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js-xds").is_dir():
        raise SystemExit(f"npm ci --prefix {NODE_DIR} first (or make test)")
    from examples.reviews_server import make_server

    backend, port = make_server("reviews", 0)
    backend.start()
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="agent-bench-") as name:
        tmp = Path(name)
        config, cert_dir = tmp / "mesh", tmp / "certs"
        write_mesh(config, port)
        cp = ControlPlaneThread(config, cert_dir)
        write_route(config, 0)
        cp.models[1] = cp.loader.load()
        try:
            relay, relay_address = start_agent(
                tmp, "relay", "--xds-address", f"127.0.0.1:{cp.plain_port}",
                "--insecure-upstream")
            agent, agent_address = start_agent(
                tmp, "agent", "--xds-address", f"127.0.0.1:{cp.mtls_port}",
                "--cert-dir", str(cert_dir))
            procs += [relay, agent]
            addresses = {"direct": f"127.0.0.1:{cp.plain_port}", "relay": relay_address,
                         "agent": agent_address}
            results: dict[str, list[float]] = {m: [] for m in MODES}
            medians: dict[str, list[float]] = {m: [] for m in MODES}
            for i in range(args.rounds):
                for mode in MODES[i % 3:] + MODES[:i % 3]:
                    node_id = f"bench-{mode}-{i}"
                    client = NodeClient(tmp, addresses[mode], node_id)
                    try:
                        cp.push(node_id)  # warm: the first push after subscribing
                        got = [cp.push(node_id) for _ in range(args.pushes)]
                    finally:
                        client.close()
                    results[mode] += got
                    medians[mode].append(statistics.median(got))
        finally:
            stop(procs)
            cp.close()
            backend.stop(0)
    print(f"ADS push to Node grpc-js-xds until its RDS ACK: {args.rounds} rounds "
          f"interleaved, {args.pushes} pushes each")
    print(f"{'':<8}{'p50 ms':>9}{'p99 ms':>9}{'vs direct (median of round ratios)':>37}")
    for mode in MODES:
        ratio = statistics.median(a / b for a, b in zip(medians[mode], medians["direct"],
                                                        strict=True))
        print(f"{mode:<8}{pct(results[mode], 50) * 1e3:>9.2f}"
              f"{pct(results[mode], 99) * 1e3:>9.2f}{ratio:>37.3f}")


if __name__ == "__main__":
    main()
