"""What the benchmarks share: processes, timing loops, paired ratios, client rows.

* ports, the backend (examples/reviews_server.py) and the ``meshctl control-plane``
  process, the gRPC xDS bootstrap for native ``xds:///`` clients, and stopping them;
* the timing loops (sequential sync / aio calls, N calls in flight) and their
  bookkeeping (:class:`Series`: pooled latencies, per-round p50 and CPU per call) with
  the median of per-round ratios, which is how every benchmark here reports;
* client_bench's rows (:class:`ClientRows`), built in whichever process imports them;
* a temporary git worktree of another revision, and ``python -I`` commands that put a
  given tree first on ``sys.path`` (ab_bench, cold_start_bench).

meshlib is never imported here: callers pass the ``meshlib`` module in, so that each of
ab_bench's workers uses its own tree's.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import grpc
import psutil

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
METHOD = "/demo.Reviews/Get"
REVIEWS_POLICY = """---
apiVersion: meshlib.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: reviews, namespace: default}
spec:
  targetRef: {kind: Service, name: reviews}
  retries: {attempts: 3, retryOn: [UNAVAILABLE]}
  outlierDetection: {consecutiveFailures: 5}
  circuitBreaker: {consecutiveFailures: 5, openDuration: 10s}
"""


# ------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_yaml(name: str, port: int, protocol: str = "grpc") -> str:
    """A Service (port 50051 for grpc, 80 for http) with one endpoint on loopback."""
    service_port = 80 if protocol == "http" else 50051
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports:
  - {{name: {protocol}, port: {service_port}, targetPort: {protocol}, appProtocol: {protocol}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: {protocol}, port: {port}, protocol: TCP, appProtocol: {protocol}}}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {{ready: true}}
"""


def wait_http(url: str, timeout: float = 30, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers 200; give up after ``timeout`` or when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited ({proc.returncode}) before {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


def meshctl() -> Path:
    """The ``meshctl`` console script of this interpreter's venv (wherever its CLI
    module lives: the entry point knows)."""
    path = Path(sys.executable).parent / "meshctl"
    if not path.exists():
        raise SystemExit(f"{path} not found: run `make .venv/.installed` first")
    return path


def start_control_plane(config: Path, *extra: str, prefix: Sequence[str] = (),
                        timeout: float = 30,
                        stderr: int | None = subprocess.DEVNULL,
                        ) -> tuple[subprocess.Popen, str, str]:
    """``meshctl control-plane --insecure`` on free ports, ready: the process, its xDS
    address and its admin URL. Plaintext: these benchmarks measure the data plane and
    pushes (``control_tls_bench.py`` measures what the secure control channel costs).

    ``prefix`` goes between the interpreter and the script (``-m cProfile -o F``).
    """
    xds_port, admin_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, *prefix, str(meshctl()), "control-plane", "--config", str(config),
         "--insecure", "--xds-address", f"127.0.0.1:{xds_port}",
         "--admin-address", f"127.0.0.1:{admin_port}", *extra],
        stdout=subprocess.DEVNULL, stderr=stderr, cwd=ROOT)
    try:
        wait_http(f"http://127.0.0.1:{admin_port}/readyz", timeout, proc)
    except BaseException:
        stop([proc])
        raise
    return proc, f"127.0.0.1:{xds_port}", f"http://127.0.0.1:{admin_port}"


def start_backend(port: int, name: str = "reviews-0") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "examples/reviews_server.py"),
                             "--name", name, "--port", str(port)], stdout=subprocess.DEVNULL)


def native_env(tmp: Path, xds_address: str, node_id: str = "bench-native") -> dict[str, str]:
    """Write a gRPC xDS bootstrap for ``xds_address``; the environment that uses it."""
    bootstrap = tmp / f"{node_id}.json"
    subprocess.run([str(meshctl()), "bootstrap", "--xds-address", xds_address, "--node-id",
                    node_id, "--output", str(bootstrap)], check=True, timeout=60)
    return {"GRPC_XDS_BOOTSTRAP": str(bootstrap),
            "GRPC_EXPERIMENTAL_XDS_DATA_ERROR_HANDLING": "true"}


@dataclass
class ReviewsMesh:
    """One backend answering ``reviews`` and a control plane serving it."""

    procs: list[subprocess.Popen]
    backend_port: int
    xds_address: str
    env: dict[str, str]  # GRPC_XDS_BOOTSTRAP for native xds:/// clients


def start_reviews_mesh(tmp: Path, services: int = 0) -> ReviewsMesh:
    """Backend + control plane (``reviews`` with REVIEWS_POLICY, and ``services``
    more Services svc-0... on the same backend); stop ``.procs`` when done."""
    backend_port = free_port()
    procs = [start_backend(backend_port)]
    try:
        config = tmp / "mesh"
        config.mkdir()
        text = service_yaml("reviews", backend_port) + REVIEWS_POLICY
        text += "".join(service_yaml(f"svc-{i}", backend_port) for i in range(services))
        (config / "mesh.yaml").write_text(text)
        cp, address, _ = start_control_plane(config)
        procs.append(cp)
        return ReviewsMesh(procs, backend_port, address, native_env(tmp, address))
    except BaseException:
        stop(procs)
        raise


def stop(procs: Sequence[subprocess.Popen], timeout: float = 10,
         sig: int = signal.SIGTERM) -> None:
    """Signal each process (by its PID) and reap it; kill it if it lingers."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


# ------------------------------------------------------------------ timing


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def rotated(items: list, by: int) -> list:
    """``items`` starting at index ``by``: each round starts with another row."""
    by %= len(items)
    return items[by:] + items[:by]


def paired(values: Sequence[float], base: Sequence[float]) -> float:
    """The median of per-round ratios: each round's rows ran back to back, so drift
    between rounds cancels out."""
    return statistics.median(a / b for a, b in zip(values, base, strict=True))


def measure_sync(call: Callable[[], object], n: int) -> tuple[list[float], float]:
    """``n`` sequential calls: latencies (µs) and this process's CPU µs per call."""
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
    """``total`` calls, ``inflight`` at a time: calls per second."""
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


@dataclass
class Series:
    """One row's samples: every latency (pooled for p99), and per round its p50 and
    CPU per call (for paired ratios)."""

    latencies: list[float] = field(default_factory=list)
    p50s: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)

    def add(self, latencies: list[float], cpu_per_call: float) -> None:
        self.latencies += latencies
        self.p50s.append(statistics.median(latencies))
        self.cpus.append(cpu_per_call)

    def line(self, name: str, base: Series, width: int = 16, note: str = "") -> str:
        """``name  p50  p99  cpu  ×p50  ×cpu`` against ``base`` (paired ratios)."""
        return (f"{name:{width}} p50 {pct(self.latencies, 50):7.0f} µs  "
                f"p99 {pct(self.latencies, 99):7.0f} µs  "
                f"cpu {statistics.median(self.cpus):6.0f} µs/call   "
                f"×{paired(self.p50s, base.p50s):.3f} p50  "
                f"×{paired(self.cpus, base.cpus):.3f} cpu{note}")


# ------------------------------------------------------------------ client rows


class ClientRows:
    """client_bench's rows, in this process: bare grpcio, native ``xds:///reviews``
    (needs GRPC_XDS_BOOTSTRAP), a meshlib sync channel, bare grpc.aio, a meshlib aio
    channel; each warmed up (connected, resolved) before it is timed."""

    SYNC = ("bare grpcio", "native xds:///", "meshlib sync")
    AIO = ("bare grpc.aio", "meshlib aio")
    BASE = {"native xds:///": "bare grpcio", "meshlib sync": "bare grpcio",
            "meshlib aio": "bare grpc.aio"}
    #: ``pipeline=True``: meshlib's own work per call, the endpoint call stubbed out
    #: (no socket, no grpc): the pipeline alone, sync and aio.
    PIPELINE_SYNC = ("pipeline sync",)
    PIPELINE_AIO = ("pipeline aio",)

    def __init__(self, meshlib: ModuleType, backend_port: int, xds_address: str,
                 node_id: str = "bench", warm_up: int = 200, pipeline: bool = False
                 ) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.mesh = meshlib.Mesh(xds_address=xds_address, node_id=node_id, service="bench")
        backend = f"127.0.0.1:{backend_port}"
        self._channels = [grpc.insecure_channel(backend), grpc.insecure_channel("xds:///reviews")]
        stubs = {
            "bare grpcio": self._channels[0].unary_unary(METHOD, _registered_method=True),
            "native xds:///": self._channels[1].unary_unary(METHOD, _registered_method=True),
            "meshlib sync": self.mesh.channel("reviews").unary_unary(METHOD),
        }

        async def aio_stubs() -> dict[str, Callable[..., object]]:
            bare = grpc.aio.insecure_channel(backend)
            return {"bare grpc.aio": bare.unary_unary(METHOD, _registered_method=True),
                    "meshlib aio": self.mesh.aio_channel("reviews").unary_unary(METHOD)}

        stubs.update(self.loop.run_until_complete(aio_stubs()))
        if pipeline:
            stubs["pipeline sync"] = _stubbed(self.mesh.channel("reviews").unary_unary(METHOD),
                                              _StubCall())
            stubs["pipeline aio"] = self.loop.run_until_complete(_stubbed_aio(self.mesh))
        self.calls: dict[str, Callable[[], object]] = {
            name: (lambda stub=stub: stub(b"", timeout=5)) for name, stub in stubs.items()}
        for name in self.calls:
            self.measure(name, warm_up)

    def measure(self, name: str, n: int) -> tuple[list[float], float]:
        """``n`` sequential calls on row ``name``: latencies (µs), CPU µs per call."""
        if name in self.AIO or name in self.PIPELINE_AIO:
            return self.loop.run_until_complete(measure_aio(self.calls[name], n))
        return measure_sync(self.calls[name], n)

    def rate(self, name: str, total: int, inflight: int = 32) -> float:
        """Calls per second of aio row ``name`` with ``inflight`` calls in flight."""
        return self.loop.run_until_complete(concurrent(self.calls[name], total, inflight))

    def close(self) -> None:
        self.mesh.close()
        for channel in self._channels:
            channel.close()
        self.loop.close()


class _StubCall:
    """An endpoint multicallable that answers at once, without grpc."""

    def __call__(self, request: bytes, **kwargs: object) -> bytes:
        return b"ok"


class _AioStubCall:
    def __call__(self, request: bytes, **kwargs: object) -> object:
        return _answer(b"ok")


async def _answer(value: bytes) -> bytes:
    return value


def _stubbed(multicallable: object, endpoint_call: object) -> object:
    """``multicallable`` (a meshlib channel's) whose endpoint call is ``endpoint_call``:
    its class gets a subclass overriding ``_callable`` (meshlib's per-endpoint
    multicallable factory, the same name before and after the pipeline rewrite)."""
    cls = type(multicallable)
    stubbed = type(f"Stubbed{cls.__name__}", (cls,),
                   {"__slots__": (), "_callable": lambda self, endpoint: endpoint_call})
    multicallable.__class__ = stubbed
    return multicallable


async def _stubbed_aio(mesh: object) -> object:
    return _stubbed(mesh.aio_channel("reviews").unary_unary(METHOD),  # type: ignore[attr-defined]
                    _AioStubCall())


def client_table(series: dict[str, Series], rates: dict[str, list[float]]) -> list[str]:
    """client_bench's report: each row against its bare row, then the rate line."""
    lines = [series[name].line(name, series[ClientRows.BASE.get(name, name)])
             for name in (*ClientRows.SYNC, *ClientRows.AIO)]
    bare, mesh = (statistics.median(rates[name]) for name in ClientRows.AIO)
    lines.append(f"32 in flight (aio): bare {bare:,.0f} calls/s, meshlib {mesh:,.0f} "
                 f"calls/s  ×{mesh / bare:.3f}")
    return lines


# ------------------------------------------------------------------ other trees


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True,
                          text=True, timeout=120).stdout.strip()


def baseline_commit(rev: str | None) -> str:
    """The commit ``rev`` names; by default the merge-base of HEAD and ``main`` (on
    ``main`` itself: HEAD, i.e. the last commit against uncommitted edits)."""
    if rev is None:
        try:
            return git("merge-base", "HEAD", "main")
        except subprocess.CalledProcessError:
            return git("rev-parse", "HEAD")
    try:
        return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"--baseline {rev}: not a commit in {ROOT}") from None


def short(commit: str) -> str:
    return git("rev-parse", "--short", commit)


def working_tree_label() -> str:
    """``git rev-parse --short HEAD``, with ``+uncommitted`` when tracked files differ."""
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return short("HEAD") + ("+uncommitted" if dirty else "")


@contextlib.contextmanager
def baseline_worktree(commit: str) -> Iterator[Path]:
    """A temporary detached ``git worktree`` of ``commit``, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="meshlib-baseline-"))
    path = tmp / "tree"
    try:
        git("worktree", "add", "--detach", "--quiet", str(path), commit)
        yield path
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            git("worktree", "remove", "--force", str(path))
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(subprocess.CalledProcessError):
            git("worktree", "prune")


def tree_command(tree: Path, code: str, *args: object, paths: Sequence[Path] = (),
                 flags: Sequence[str] = ()) -> list[str]:
    """``python -I [flags] -c code args`` with ``tree`` (then ``paths``) first on
    sys.path: -I drops PYTHONPATH, the cwd and user site, and the venv's editable
    install of the working tree comes after sys.path, so ``tree``'s packages win."""
    entries = [str(tree), *map(str, paths)]
    prelude = f"import sys; sys.path[:0] = {entries!r}\n"
    return [sys.executable, "-I", *flags, "-c", prelude + code, *map(str, args)]
