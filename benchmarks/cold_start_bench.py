"""Cold start: import time, and the first routed call, each sample a fresh process.

    .venv/bin/python benchmarks/cold_start_bench.py [--rounds 30] [--baseline [REV]]

Every sample is a new ``python -I`` process (nothing cached in-process), timed inside
the child with ``time.perf_counter()`` after interpreter start-up; the kinds of sample
are interleaved, their order rotated round by round. Reported: min / median / p90 in
ms, and ratios as medians of per-round ratios.

* Imports: ``import grpc``, ``import meshlib``, ``from meshlib import Mesh`` (ratios
  against ``import grpc``); then, once, the 15 largest cumulative entries of
  ``python -X importtime -c "import meshlib"``.
* First routed call, against one backend (examples/reviews_server.py) and one
  ``meshctl control-plane``, shared by every sample; the child imports grpc and meshlib
  first (not timed), then times
  - meshlib: ``Mesh(...)`` -> ``mesh.channel("reviews")`` -> first unary call
    returned, and the part from "Mesh() returned" to the call returned;
  - native gRPC: ``grpc.insecure_channel("xds:///reviews")`` (GRPC_XDS_BOOTSTRAP at
    the same control plane) -> first unary call returned;
  with ratios meshlib / native for both meshlib parts; and "from scratch", the same
  child timed from before its imports (``import grpc``, ``import meshlib``) to the
  first call returned, against native's ``import grpc`` -> first call: what a new
  process waits for its first answer.

``--baseline REV`` (``--baseline`` alone: the merge-base of HEAD and ``main``) also
runs every meshlib sample with meshlib from a temporary ``git worktree`` of REV
(removed at the end), interleaved with the working tree's, and adds after/before
ratios. The first sample of each kind and tree is a discarded warm-up (a fresh
worktree writes its .pyc files then).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    METHOD,
    ROOT,
    baseline_commit,
    baseline_worktree,
    paired,
    pct,
    rotated,
    short,
    start_reviews_mesh,
    stop,
    tree_command,
    working_tree_label,
)

# Children print one JSON line of milliseconds (and where meshlib came from).
IMPORT = """import json, time
t0 = time.perf_counter()
{statement}
ms = (time.perf_counter() - t0) * 1e3
meshlib = sys.modules.get("meshlib")
print(json.dumps({{"import": ms, "file": meshlib and meshlib.__file__}}))
"""
MESHLIB_CALL = f"""import json, os, time
t_import = time.perf_counter()
import grpc
import meshlib
from meshlib import Mesh
t0 = time.perf_counter()
mesh = Mesh(xds_address=sys.argv[1], node_id=f"cold-{{os.getpid()}}", service="bench")
t1 = time.perf_counter()
mesh.channel("reviews").unary_unary({METHOD!r})(b"", timeout=10)
t2 = time.perf_counter()
print(json.dumps({{"total": (t2 - t0) * 1e3, "after Mesh()": (t2 - t1) * 1e3,
                  "Mesh()": (t1 - t0) * 1e3, "from scratch": (t2 - t_import) * 1e3,
                  "file": meshlib.__file__}}), flush=True)
mesh.close()
"""
NATIVE_CALL = f"""import json, time
t_import = time.perf_counter()
import grpc
t0 = time.perf_counter()
channel = grpc.insecure_channel("xds:///reviews")
channel.unary_unary({METHOD!r}, _registered_method=True)(b"", timeout=10)
t1 = time.perf_counter()
print(json.dumps({{"total": (t1 - t0) * 1e3, "from scratch": (t1 - t_import) * 1e3}}),
      flush=True)
channel.close()
"""


@dataclass(frozen=True)
class Kind:
    """One kind of sample: a child program, run under a tree (None: no meshlib)."""

    name: str
    code: str
    side: str | None  # "after" (working tree), "before" (baseline), None (grpc only)


def kinds(sides: list[str]) -> list[Kind]:
    out = [Kind("import grpc", IMPORT.format(statement="import grpc"), None),
           Kind("native first call", NATIVE_CALL, None)]
    for side in sides:
        out += [Kind("import meshlib", IMPORT.format(statement="import meshlib"), side),
                Kind("from meshlib import Mesh",
                     IMPORT.format(statement="from meshlib import Mesh"), side),
                Kind("meshlib first call", MESHLIB_CALL, side)]
    return out


def sample(kind: Kind, trees: dict[str, Path], xds_address: str,
           env: dict[str, str]) -> dict:
    tree = trees[kind.side or "after"]
    out = subprocess.run(tree_command(tree, kind.code, xds_address), capture_output=True,
                         text=True, env=env, timeout=120)
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"{kind.name} ({kind.side}) failed ({out.returncode}):\n"
                           f"{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[0])
    file = result.get("file")
    if kind.side and not Path(file).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"{kind.name}: meshlib came from {file}, not from {tree}")
    return result


def importtime(tree: Path, top: int = 15) -> list[str]:
    """``python -X importtime -c "import meshlib"``: its ``top`` largest cumulative
    entries, then the self times summed by top-level package (what it pulls in)."""
    out = subprocess.run(tree_command(tree, "import meshlib", flags=["-X", "importtime"]),
                         capture_output=True, text=True, check=True, timeout=120)
    entries = []
    for line in out.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():
            entries.append((int(parts[1]), int(parts[0]), parts[2].strip()))
    packages: dict[str, int] = {}
    for _, own, name in entries:
        packages[name.split(".")[0]] = packages.get(name.split(".")[0], 0) + own
    entries.sort(reverse=True)
    lines = [f"top {top} cumulative (ms cumulative, ms self, module):"]
    lines += [f"  {cum / 1e3:7.1f} {own / 1e3:6.1f}  {name}" for cum, own, name in entries[:top]]
    biggest = sorted(packages.items(), key=lambda item: -item[1])[:10]
    lines.append("self time by top-level package: " + ", ".join(
        f"{name} {own / 1e3:.1f}" for name, own in biggest) + " ms")
    return lines


@contextlib.contextmanager
def trees_for(args: argparse.Namespace) -> Iterator[tuple[dict[str, Path], dict[str, str]]]:
    """The trees to sample (``after``: the working tree; ``before``: a temporary
    worktree of the baseline, if asked for) and their ``git rev-parse --short``."""
    labels = {"after": working_tree_label()}
    if args.baseline is None:
        yield {"after": ROOT}, labels
        return
    commit = baseline_commit(None if args.baseline == "default" else args.baseline)
    labels["before"] = short(commit)
    with baseline_worktree(commit) as tree:
        yield {"before": tree, "after": ROOT}, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30,
                        help="samples of each kind (one per round, order rotated)")
    parser.add_argument("--baseline", metavar="REV", nargs="?", const="default",
                        help="also sample meshlib at REV (alone: merge-base of HEAD and main)")
    args = parser.parse_args()
    with trees_for(args) as (trees, labels), tempfile.TemporaryDirectory() as tmp:
        for side, label in labels.items():
            print(f"{side:6} {label:>20}  {trees[side]}")
        mesh = start_reviews_mesh(Path(tmp))
        try:
            env = {**os.environ, **mesh.env}
            run(args, trees, mesh.xds_address, env)
        finally:
            stop(mesh.procs)
        print("\npython -X importtime -c 'import meshlib' (working tree), once:")
        print("\n".join(importtime(ROOT)))


def run(args: argparse.Namespace, trees: dict[str, Path], xds_address: str,
        env: dict[str, str]) -> None:
    todo = kinds(sorted(trees, reverse=True))  # "after" first, "before" if any
    for kind in todo:  # warm-up, discarded: .pyc files written, page cache filled
        sample(kind, trees, xds_address, env)
    results: dict[Kind, list[dict]] = {kind: [] for kind in todo}
    for round_no in range(args.rounds):
        for kind in rotated(todo, round_no):
            results[kind].append(sample(kind, trees, xds_address, env))

    def values(name: str, side: str | None, key: str) -> list[float]:
        kind = next(k for k in todo if k.name == name and k.side == side)
        return [r[key] for r in results[kind]]

    def line(label: str, ms: list[float], base: list[float] | None = None,
             versus: str = "") -> str:
        text = (f"{label:44} {min(ms):7.1f} {statistics.median(ms):7.1f} "
                f"{pct(ms, 90):7.1f}")
        return text + (f"   ×{paired(ms, base):.2f} vs {versus}" if base else "")

    sides = [side for side in ("before", "after") if side in trees]
    tag = (lambda side: f" [{side}]") if len(sides) > 1 else (lambda side: "")
    print(f"\ncold start: {args.rounds} rounds, every sample a fresh `python -I` process; "
          "ms; ratios are medians of per-round ratios")
    print(f"{'':44} {'min':>7} {'median':>7} {'p90':>7}")
    grpc_ms = values("import grpc", None, "import")
    print(line("import grpc", grpc_ms))
    for side in sides:
        for name in ("import meshlib", "from meshlib import Mesh"):
            print(line(name + tag(side), values(name, side, "import"), grpc_ms,
                       "import grpc"))
    print("first routed call (one backend, one control plane, shared):")
    native = values("native first call", None, "total")
    print(line("native: xds:/// channel -> call", native))
    for side in sides:
        for key, label in (("total", "meshlib: Mesh() -> channel -> call"),
                           ("after Mesh()", "meshlib: Mesh() returned -> call")):
            print(line(label + tag(side), values("meshlib first call", side, key), native,
                       "native"))
        print(line("  of which Mesh() itself" + tag(side),
                   values("meshlib first call", side, "Mesh()")))
    print("from scratch: the imports, then the first routed call (what a new process waits):")
    scratch = values("native first call", None, "from scratch")
    print(line("native: import grpc -> ... -> call", scratch))
    for side in sides:
        print(line("meshlib: import meshlib -> ... -> call" + tag(side),
                   values("meshlib first call", side, "from scratch"), scratch, "native"))
    if len(sides) > 1:
        print("\nafter/before (medians of per-round ratios):")
        for name, key, label in (
                ("import meshlib", "import", "import meshlib"),
                ("from meshlib import Mesh", "import", "from meshlib import Mesh"),
                ("meshlib first call", "total", "Mesh() -> channel -> call"),
                ("meshlib first call", "after Mesh()", "Mesh() returned -> call"),
                ("meshlib first call", "Mesh()", "Mesh() itself"),
                ("meshlib first call", "from scratch", "import -> first call")):
            ratio = paired(values(name, "after", key), values(name, "before", key))
            print(f"  {label:42} ×{ratio:.3f}")


if __name__ == "__main__":
    main()
