"""A long-lived gRPC native xDS client, driven by JSON lines on stdin.

Runs in its own process because gRPC reads its xDS bootstrap once per process.
Each input line is a command; each output line is its JSON result:

    {"op": "calls", "target": "xds:///...", "n": 100, "metadata": [["k", "v"]]}
      -> {"counts": {"reviews-v1-a": 60, ...}, "errors": {"UNAVAILABLE": 0}}
    {"op": "wait_for", "target": ..., "backend": "reviews-v2", "timeout": 10}
      -> {"ok": true, "seconds": 0.4}
"""

from __future__ import annotations

import collections
import json
import sys
import time

import grpc

METHOD = "/demo.Reviews/Get"
_channels: dict[str, grpc.Channel] = {}


def _call(target: str):  # type: ignore[no-untyped-def]
    if target not in _channels:
        _channels[target] = grpc.insecure_channel(target)
    return _channels[target].unary_unary(METHOD)


def calls(cmd: dict) -> dict:
    call = _call(cmd["target"])
    metadata = tuple(tuple(m) for m in cmd.get("metadata", ()))
    counts: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    for _ in range(cmd["n"]):
        try:
            counts[call(b"", timeout=cmd.get("timeout", 5.0), metadata=metadata,
                        wait_for_ready=cmd.get("wait_for_ready", False)).decode()] += 1
        except grpc.RpcError as err:
            errors[err.code().name] += 1
    return {"counts": counts, "errors": errors}


def wait_for(cmd: dict) -> dict:
    """Call until ``consecutive`` (default 1) responses in a row come from ``backend``
    (prefix match), or time runs out. Waiting for a new split needs a run of them: a
    backend the old split also reaches answers some calls before the change too."""
    call = _call(cmd["target"])
    metadata = tuple(tuple(m) for m in cmd.get("metadata", ()))
    start = time.monotonic()
    deadline = start + cmd.get("timeout", 10.0)
    wanted = cmd.get("consecutive", 1)
    last, streak = "", 0
    while time.monotonic() < deadline:
        try:
            last = call(b"", timeout=2.0, metadata=metadata, wait_for_ready=True).decode()
            streak = streak + 1 if last.startswith(cmd["backend"]) else 0
            if streak >= wanted:
                return {"ok": True, "seconds": time.monotonic() - start}
        except grpc.RpcError as err:
            last, streak = err.code().name, 0
        if not streak:
            time.sleep(0.01)
    return {"ok": False, "last": last}


def main() -> None:
    ops = {"calls": calls, "wait_for": wait_for}
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        print(json.dumps(ops[cmd["op"]](cmd)), flush=True)


if __name__ == "__main__":
    main()
