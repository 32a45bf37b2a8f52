"""A gRPC service served through meshlib: ``mesh.server()``.

    python examples/mesh_server.py --port 50061 --xds-address 127.0.0.1:15010

``mesh.server("reviews", port=...)`` is a ``grpc.Server``. The control plane tells it
the mTLS mode (the AccessPolicy of the Service this address belongs to, else
MeshConfig's) and the ALLOW/DENY rules it enforces; handlers learn who called with
:func:`meshlib.peer_identity`. Its calls are counted and traced like the clients'.
"""

from __future__ import annotations

import argparse
import signal

import grpc

import meshlib


def make_handler(name: str) -> grpc.GenericRpcHandler:
    """``/demo.Reviews/Get`` answering ``name``, as the example backends do."""

    def get(request: bytes, context: grpc.ServicerContext) -> bytes:
        caller = meshlib.peer_identity(context)  # the caller's SPIFFE ID under mTLS
        print(f"{name}: call from {caller or 'a plaintext caller'}", flush=True)
        return name.encode()

    return grpc.method_handlers_generic_handler(
        "demo.Reviews", {"Get": grpc.unary_unary_rpc_method_handler(get)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=50061)
    parser.add_argument("--name", default="reviews-v1-a", help="what it answers")
    parser.add_argument("--xds-address", default="127.0.0.1:15010")
    args = parser.parse_args()
    with meshlib.Mesh(xds_address=args.xds_address, service="reviews") as mesh:
        server = mesh.server("reviews", port=args.port, host="127.0.0.1")
        server.add_generic_rpc_handlers((make_handler(args.name),))
        server.start()
        print(f"{args.name} serving on 127.0.0.1:{args.port} ({server.mtls_mode})",
              flush=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: server.stop(grace=1))
        server.wait_for_termination()


if __name__ == "__main__":
    main()
