"""A tiny gRPC backend for the demo and the tests: ``/demo.Reviews/Get`` answers its name.

Run one, or every gRPC backend a mesh config lists on this machine::

    python examples/reviews_server.py --name reviews-v1-a --port 50061
    python examples/reviews_server.py --config examples/mesh     # 50061, 50062, 50063

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
    # No SO_REUSEPORT: a port already in use is an error, not silently shared.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), xds=xds,
                         options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    return server, (port if xds else bound)


def local_backends(config: str) -> list[tuple[str, str, int]]:
    """``(name, host, port)`` of every gRPC endpoint on 127.x in the mesh config at
    ``config``, named after its Pod (``targetRef``) when it has one."""
    from xds_server.sources.yaml_loader import load_model

    seen: dict[tuple[str, int], str] = {}
    for eps in load_model(config).endpoint_slices:
        for port in eps.ports:
            if (port.app_protocol or port.name.split("-")[0]) != "grpc":
                continue
            for ep in eps.endpoints:
                for address in ep.addresses:
                    if address.startswith("127.") and (address, port.port) not in seen:
                        seen[(address, port.port)] = \
                            ep.target_pod or f"{eps.service_name}-{port.port}"
    return [(name, host, port) for (host, port), name in seen.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", help="the name it answers (with --port)")
    parser.add_argument("--port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--config", help="serve every local gRPC backend this mesh config "
                                         "lists (instead of --name/--port)")
    parser.add_argument("--xds", action="store_true", help="take the listener from xDS")
    args = parser.parse_args()
    if args.config:
        backends = local_backends(args.config)
    elif args.name and args.port is not None:
        backends = [(args.name, args.host, args.port)]
    else:
        parser.error("give --config, or --name and --port")
    servers = []
    for name, host, port in backends:
        try:
            server, _ = make_server(name, port, host=host, xds=args.xds)
        except RuntimeError:
            parser.exit(1, f"reviews_server: {host}:{port} is in use; stop what serves "
                           "there first\n")
        server.start()
        servers.append(server)
        print(f"{name} serving on {host}:{port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    for server in servers:
        server.stop(grace=1)


if __name__ == "__main__":
    main()
