"""meshlib at a git revision (before) against the working tree (after), in one run.

    .venv/bin/python benchmarks/ab_bench.py [--baseline REV] [--rounds 40] [--calls 250]

REV is any commit-ish (``--baseline 5c53b4f``, ``--baseline HEAD~3``); by default the
merge-base of HEAD and ``main`` (on ``main`` itself that is HEAD: the last commit
against your uncommitted edits).

How it runs: a temporary ``git worktree add --detach`` of REV (removed at the end);
ONE backend (examples/reviews_server.py) and ONE ``meshctl control-plane`` (the
working tree's), shared by both sides; two long-lived worker processes with this
interpreter, started ``python -I`` with their tree's root first on sys.path (each
checks that ``meshlib.__file__`` lies in its tree, so the venv's editable install of
the working tree cannot win). Each worker builds client_bench's rows (bare grpcio,
native ``xds:///reviews``, meshlib sync, bare grpc.aio, meshlib aio, the
32-in-flight aio rates) and two "pipeline" rows — a meshlib channel whose endpoint
call is stubbed out, so the row is meshlib's own work per call, sync and aio — then
answers JSON-line commands on stdin/stdout ("run row X for N calls" -> latencies and
that process's CPU µs per call). Each round runs every row in both workers, the row
order and which worker goes first rotated round by round; one process runs at a time
(the other waits on stdin), so the two never compete for the cores.

Report: per side, client_bench's table (p50, p99 of all calls, median CPU per call,
ratios against that worker's own bare row); then after/before per row: medians of
per-round ratios for p50, CPU per call and calls/s, and the ratio of pooled p99s.
The bare and native rows do not run meshlib, so their after/before is the noise floor
(≈1.00); ``meshlib/bare`` is the after/before of each side's meshlib-to-bare ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    BENCHMARKS,
    ROOT,
    ClientRows,
    Series,
    baseline_commit,
    baseline_worktree,
    client_table,
    paired,
    pct,
    rotated,
    rss_mib,
    short,
    start_reviews_mesh,
    stop,
    tree_command,
    working_tree_label,
)

ROWS = (*ClientRows.SYNC, *ClientRows.AIO, *ClientRows.PIPELINE_SYNC, *ClientRows.PIPELINE_AIO)
RATES = tuple(f"rate {name}" for name in ClientRows.AIO)  # 32 in flight
WORKER_BOOT = "import ab_bench; ab_bench.worker(sys.argv[1:])"


# ------------------------------------------------------------------ worker side


def worker(argv: list[str]) -> None:
    """``TREE BACKEND_PORT XDS_ADDRESS NODE_ID``: build the rows, then serve commands
    (one JSON object a line) until stdin closes:
    ``{"row": NAME, "calls": N}`` -> ``{"lat": [µs...], "cpu": µs_per_call}``,
    ``{"rate": NAME, "calls": N}`` -> ``{"rate": calls_per_s}``, ``{"rss": 1}``."""
    # Answers go to a private copy of stdout; anything else printing to fd 1 (an
    # access log, a library) lands on stderr instead of in the protocol.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    tree, backend_port, xds_address, node_id = argv

    def answer(**fields: object) -> None:
        answers.write(json.dumps(fields) + "\n")

    try:
        import meshlib

        if not Path(meshlib.__file__).resolve().is_relative_to(Path(tree).resolve()):
            raise RuntimeError(f"meshlib imported from {meshlib.__file__}, not from {tree}")
        rows = ClientRows(meshlib, int(backend_port), xds_address, node_id=node_id,
                          pipeline=True)
        answer(ready=True, meshlib=meshlib.__file__, pid=os.getpid())
        for line in sys.stdin:
            cmd = json.loads(line)
            if "row" in cmd:
                latencies, cpu = rows.measure(cmd["row"], cmd["calls"])
                answer(lat=[round(v, 1) for v in latencies], cpu=cpu)
            elif "rate" in cmd:
                answer(rate=rows.rate(cmd["rate"], cmd["calls"]))
            elif "rss" in cmd:
                answer(rss=rss_mib())
        rows.close()
    except Exception:
        answer(error=traceback.format_exc())


# ------------------------------------------------------------------ orchestrator side


class Worker:
    """One worker process and a reader thread, so every answer is awaited with a
    timeout."""

    def __init__(self, side: str, tree: Path, backend_port: int, xds_address: str,
                 env: dict[str, str]) -> None:
        self.side = side
        self.proc = subprocess.Popen(
            tree_command(tree, WORKER_BOOT, tree, backend_port, xds_address,
                         f"bench-{side}", paths=[BENCHMARKS]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self._answers: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._answers.put(line)
        self._answers.put("")  # the worker exited

    def wait(self, timeout: float) -> dict:
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.side} worker: no answer in {timeout:.0f} s") from None
        if not line:
            raise RuntimeError(f"{self.side} worker exited ({self.proc.wait(10)})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.side} worker failed:\n{answer['error']}")
        return answer

    def ask(self, timeout: float, **cmd: object) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.wait(timeout)

    def stop(self) -> None:
        """Close stdin (the worker closes its Mesh and exits); then stop it by PID."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        stop([self.proc])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV",
                        help="the 'before' commit (default: merge-base of HEAD and main)")
    parser.add_argument("--calls", type=int, default=250,
                        help="sequential calls per row per round (rates: twice as many)")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    commit = baseline_commit(args.baseline)
    labels = {"before": short(commit), "after": working_tree_label()}
    with baseline_worktree(commit) as tree, tempfile.TemporaryDirectory() as tmp:
        mesh = start_reviews_mesh(Path(tmp))
        workers: list[Worker] = []
        try:
            env = {**os.environ, **mesh.env}
            for side, side_tree in (("before", tree), ("after", ROOT)):
                workers.append(Worker(side, side_tree, mesh.backend_port, mesh.xds_address,
                                      env))
            for w in workers:
                hello = w.wait(timeout=120)
                print(f"{w.side:6} {labels[w.side]:>20}  meshlib {hello['meshlib']}")
            run(args, workers, labels)
        finally:
            for w in workers:
                w.stop()
            stop(mesh.procs)


def run(args: argparse.Namespace, workers: list[Worker], labels: dict[str, str]) -> None:
    series = {w.side: {name: Series() for name in ROWS} for w in workers}
    rates: dict[str, dict[str, list[float]]] = {
        w.side: {name: [] for name in ClientRows.AIO} for w in workers}
    timeout = 60 + args.calls * 0.05
    for round_no in range(args.rounds):
        # Rows rotate, and so does which worker runs a row first; each row runs in one
        # worker and then the other, back to back, so the pairs see the same machine.
        for name in rotated([*ROWS, *RATES], round_no):
            for w in rotated(workers, round_no):
                if name in RATES:
                    row = name.removeprefix("rate ")
                    got = w.ask(timeout, rate=row, calls=args.calls * 2)
                    rates[w.side][row].append(got["rate"])
                else:
                    got = w.ask(timeout, row=name, calls=args.calls)
                    series[w.side][name].add(got["lat"], got["cpu"])
    rss = {w.side: w.ask(60, rss=1)["rss"] for w in workers}

    print(f"\n{args.rounds} rounds × {args.calls} sequential unary calls per row and side, "
          "interleaved; ratios against the same side's bare row")
    for side in ("before", "after"):
        print(f"\n{side} ({labels[side]}), worker RSS {rss[side]:.0f} MiB")
        print("\n".join(client_table(series[side], rates[side])))
        for name in (*ClientRows.PIPELINE_SYNC, *ClientRows.PIPELINE_AIO):
            cpu = statistics.median(series[side][name].cpus)
            print(f"{name:16} cpu {cpu:6.1f} µs/call (the endpoint call stubbed out: "
                  "meshlib's own work per call)")

    print(f"\nafter/before ({labels['after']} / {labels['before']}): medians of per-round "
          "ratios (p99: pooled); bare and native rows are the noise floor")
    before, after = series["before"], series["after"]
    for name in ROWS:
        b, a = before[name], after[name]
        line = (f"{name:16} ×{paired(a.p50s, b.p50s):.3f} p50  "
                f"×{pct(a.latencies, 99) / pct(b.latencies, 99):.3f} p99  "
                f"×{paired(a.cpus, b.cpus):.3f} cpu")
        if name.startswith("meshlib"):
            p50, cpu = (paired(relative(after, name, attr), relative(before, name, attr))
                        for attr in ("p50s", "cpus"))
            line += f"   meshlib/bare: ×{p50:.3f} p50  ×{cpu:.3f} cpu"
        print(line)
    for name in ClientRows.AIO:
        r = paired(rates["after"][name], rates["before"][name])
        print(f"32 in flight, {name}: ×{r:.3f} calls/s  "
              f"({statistics.median(rates['before'][name]):,.0f} -> "
              f"{statistics.median(rates['after'][name]):,.0f})")


def relative(series: dict[str, Series], name: str, attr: str) -> list[float]:
    """Per round, row ``name``'s p50s or cpus over its bare row's."""
    base = getattr(series[ClientRows.BASE[name]], attr)
    return [x / y for x, y in zip(getattr(series[name], attr), base, strict=True)]


if __name__ == "__main__":
    main()
