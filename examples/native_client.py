"""gRPC's own xDS client driving traffic at the mesh, printing the live split.

This is what a service in any language does: point a channel at ``xds:///<service>``
with a bootstrap from ``meshctl bootstrap`` — no meshlib in the process::

    meshctl bootstrap --xds-address 127.0.0.1:15010 --node-id demo-client -o /tmp/b.json
    GRPC_XDS_BOOTSTRAP=/tmp/b.json python examples/native_client.py \
        --target xds:///reviews.default.svc.cluster.local:50051 --seconds 20
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import time

import grpc

METHOD = "/demo.Reviews/Get"


def bar(counts: collections.Counter[str], total: int, width: int = 40) -> str:
    """One line per backend, and the share of each version (``reviews-v1-a`` → ``reviews-v1``)."""
    versions: collections.Counter[str] = collections.Counter()
    for name, n in counts.items():
        versions[name.rsplit("-", 1)[0]] += n
    parts = ["  ".join(f"{v}: {n / total:6.1%}" for v, n in sorted(versions.items()))]
    for name, n in sorted(counts.items()):
        share = n / total if total else 0.0
        parts.append(f"{name:>14} {share:6.1%} {'#' * round(share * width)}")
    return "\n".join(parts)


def compact(label: str, counts: collections.Counter[str], total: int, errors: int) -> str:
    """One line: the share of each version in the last second."""
    versions: collections.Counter[str] = collections.Counter()
    for name, n in counts.items():
        versions[name.rsplit("-", 1)[0]] += n
    shares = "  ".join(f"{v}: {n / total:6.1%}" for v, n in sorted(versions.items()))
    return f"{label:>8} | {shares}   ({total} calls, {errors} errors so far)"


def drive(call: collections.abc.Callable[..., bytes], *, seconds: float, rate: float,
          metadata: tuple, label: str = "", one_line: bool = False) -> int:
    """Call at ``rate`` per second for ``seconds``, printing the split every second;
    returns the number of failed calls."""
    deadline = time.monotonic() + seconds
    window: collections.Counter[str] = collections.Counter()
    errors = 0
    next_print = time.monotonic() + 1.0
    interval = 1.0 / rate
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            window[call(b"", timeout=2.0, metadata=metadata).decode()] += 1
        except grpc.RpcError as err:
            errors += 1
            window[f"error:{err.code().name}"] += 1
        if time.monotonic() >= next_print:
            total = sum(window.values())
            if one_line:
                print(compact(label, window, total, errors), flush=True)
            else:
                print(f"--- last second: {total} calls, {errors} errors so far", flush=True)
                print(bar(window, total), flush=True)
            window.clear()
            next_print += 1.0
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="xds:///reviews.default.svc.cluster.local:50051")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=200.0, help="calls per second")
    parser.add_argument("--header", action="append", default=[], help="key=value metadata")
    parser.add_argument("--one-line", action="store_true", help="one line per second")
    args = parser.parse_args()
    metadata = tuple(tuple(h.split("=", 1)) for h in args.header)
    channel = grpc.insecure_channel(args.target)
    drive(channel.unary_unary(METHOD), seconds=args.seconds, rate=args.rate,
          metadata=metadata, label="native", one_line=args.one_line)
    channel.close()


if __name__ == "__main__":
    main()
