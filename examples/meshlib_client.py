"""A Python service calling through meshlib: no proxy, no bootstrap file.

    python examples/meshlib_client.py --xds-address 127.0.0.1:15010 --target reviews

``meshlib.Mesh`` connects to the control plane; ``mesh.channel("reviews")`` is a
``grpc.Channel`` that routes (the GRPCRoute's weights and header matches), balances,
retries and ejects in-process. The split printed each second follows edits to the mesh
config live.
"""

from __future__ import annotations

import argparse
import logging

from native_client import METHOD, drive

import meshlib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xds-address", required=True, help="the control plane, host:port")
    parser.add_argument("--target", default="reviews")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=200.0, help="calls per second")
    parser.add_argument("--header", action="append", default=[], help="key=value metadata")
    parser.add_argument("--one-line", action="store_true", help="one line per second")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    metadata = tuple(tuple(h.split("=", 1)) for h in args.header)
    with meshlib.Mesh(xds_address=args.xds_address, service="demo-client") as mesh:
        errors = drive(mesh.channel(args.target).unary_unary(METHOD), seconds=args.seconds,
                       rate=args.rate, metadata=metadata, label="meshlib",
                       one_line=args.one_line)
    raise SystemExit(1 if errors else 0)


if __name__ == "__main__":
    main()
