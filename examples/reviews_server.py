"""A tiny gRPC backend for the demo and the tests: ``/demo.Reviews/Get`` answers its name.

Run one or several::

    python examples/reviews_server.py --name reviews-v1-a --port 50061

It uses a generic bytes-in/bytes-out handler, so any gRPC client in any language can
call it without generated code, and it serves the standard gRPC health service.
``--xds`` makes it an xDS-enabled server (``grpc.server(..., xds=True)``) that takes
its listener from the control plane named in ``GRPC_XDS_BOOTSTRAP``.
"""

from __future__ import annotations

import argparse
import signal
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "demo.Reviews"
METHOD = f"/{SERVICE}/Get"


def make_server(name: str, port: int, *, host: str = "127.0.0.1", xds: bool = False,
                workers: int = 8) -> tuple[grpc.Server, int]:
    """A server (not yet started) answering ``name`` on ``METHOD``, and its port.

    ``port=0`` picks a free port. An xDS server's port is only known from the
    address asked for: gRPC defers the bind until its listener arrives.
    """

    def get(request: bytes, context: grpc.ServicerContext) -> bytes:
        return name.encode()

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Get": grpc.unary_unary_rpc_method_handler(get)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), xds=xds,
                         options=[("grpc.so_reuseport", 0)])  # a taken port fails to bind
    server.add_generic_rpc_handlers((handler,))
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    return server, (port if xds else bound)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--xds", action="store_true", help="take the listener from xDS")
    args = parser.parse_args()
    server, _ = make_server(args.name, args.port, host=args.host, xds=args.xds)
    server.start()
    print(f"{args.name} serving on {args.host}:{args.port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop(grace=1).wait()


if __name__ == "__main__":
    main()
