"""The programs ``meshctl demo`` runs, each in a process of its own::

    python -m meshctl.demo_apps backend --name reviews-v1-a --port 50061
    python -m meshctl.demo_apps meshlib-client --xds-address 127.0.0.1:15010
    GRPC_XDS_BOOTSTRAP=b.json python -m meshctl.demo_apps native-client
    python -m meshctl.demo_apps control-plane --config DIR --xds-address ... --admin-address ...

They ship inside the ``meshctl`` package, so an installed meshctl runs the demo without
a source checkout; ``examples/meshlib_client.py`` and ``examples/native_client.py`` run
the same code. Every program stops promptly and quietly on SIGTERM or SIGINT (a
terminal's Ctrl-C reaches the whole process group), exit status 0.

This module imports only ``grpc`` at the top: the native client must run with no
meshlib in its process, so ``meshlib`` and the control plane are imported by the
programs that use them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import collections.abc
import logging
import signal
import sys
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

__all__ = ["METHOD", "SERVICE", "Stop", "bars", "compact", "drive", "local_backends", "main",
           "make_backend", "stop_on_signals"]

SERVICE = "demo.Reviews"
METHOD = f"/{SERVICE}/Get"
NATIVE_TARGET = "xds:///reviews.default.svc.cluster.local:50051"


class Stop:
    """A flag the program polls. It takes no lock: a handler calling ``Event.set`` can
    deadlock when a second signal (the demo's SIGTERM after a terminal's SIGINT) lands
    while the first handler holds the event's lock."""

    def __init__(self) -> None:
        self.requested = False

    def set(self) -> None:
        self.requested = True


def stop_on_signals() -> Stop:
    """A :class:`Stop` set by SIGTERM or SIGINT (instead of dying, or a KeyboardInterrupt)."""
    stop = Stop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


# ------------------------------------------------------------------------- traffic


def _versions(counts: collections.Counter[str]) -> collections.Counter[str]:
    """Calls per version: ``reviews-v1-a`` and ``reviews-v1-b`` count as ``reviews-v1``."""
    versions: collections.Counter[str] = collections.Counter()
    for name, n in counts.items():
        versions[name.rsplit("-", 1)[0]] += n
    return versions


def compact(label: str, counts: collections.Counter[str], total: int, errors: int) -> str:
    """One line: the share of each version in the last second."""
    shares = "  ".join(f"{v}: {n / total:6.1%}" for v, n in sorted(_versions(counts).items()))
    return f"{label:>8} | {shares}   ({total} calls, {errors} errors so far)"


def bars(counts: collections.Counter[str], total: int, errors: int, width: int = 40) -> str:
    """The share of each version, then one bar per backend."""
    lines = [f"--- last second: {total} calls, {errors} errors so far",
             "  ".join(f"{v}: {n / total:6.1%}" for v, n in sorted(_versions(counts).items()))]
    for name, n in sorted(counts.items()):
        share = n / total if total else 0.0
        lines.append(f"{name:>14} {share:6.1%} {'#' * round(share * width)}")
    return "\n".join(lines)


def drive(call: collections.abc.Callable[..., bytes], *, seconds: float, rate: float,
          metadata: tuple = (), label: str = "", one_line: bool = False,
          stop: Stop | None = None) -> int:
    """Call at ``rate`` per second for ``seconds`` (or until ``stop`` is set), printing
    the split every second; returns the number of failed calls."""
    stop = stop if stop is not None else Stop()
    deadline = time.monotonic() + seconds
    window: collections.Counter[str] = collections.Counter()
    errors = 0
    next_print = time.monotonic() + 1.0
    interval = 1.0 / rate
    while time.monotonic() < deadline and not stop.requested:
        started = time.monotonic()
        try:
            window[call(b"", timeout=2.0, metadata=metadata).decode()] += 1
        except grpc.RpcError as err:
            if stop.requested:
                break
            errors += 1
            window[f"error:{err.code().name}"] += 1
        if time.monotonic() >= next_print:
            total = sum(window.values())
            if one_line:
                print(compact(label, window, total, errors), flush=True)
            else:
                print(bars(window, total, errors), flush=True)
            window.clear()
            next_print += 1.0
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
    return errors


def _traffic_args(parser: argparse.ArgumentParser, target: str) -> None:
    parser.add_argument("--target", default=target)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=200.0, help="calls per second")
    parser.add_argument("--header", action="append", default=[], help="key=value metadata")
    parser.add_argument("--one-line", action="store_true", help="one line per second")


def _metadata(headers: list[str]) -> tuple:
    return tuple(tuple(h.split("=", 1)) for h in headers)


def meshlib_client(args: argparse.Namespace) -> int:
    """meshlib in-process: ``mesh.channel(target)`` routes, balances and retries."""
    import meshlib  # here, not at the top: the native client runs without meshlib

    stop = stop_on_signals()
    with meshlib.Mesh(xds_address=args.xds_address, service="demo-client") as mesh:
        errors = drive(mesh.channel(args.target).unary_unary(METHOD), seconds=args.seconds,
                       rate=args.rate, metadata=_metadata(args.header), label="meshlib",
                       one_line=args.one_line, stop=stop)
    return 1 if errors and not stop.requested else 0


def native_client(args: argparse.Namespace) -> int:
    """gRPC's own xDS client (``xds:///`` target, bootstrap in ``GRPC_XDS_BOOTSTRAP``)."""
    stop = stop_on_signals()
    with grpc.insecure_channel(args.target) as channel:
        errors = drive(channel.unary_unary(METHOD), seconds=args.seconds, rate=args.rate,
                       metadata=_metadata(args.header), label="native",
                       one_line=args.one_line, stop=stop)
    return 1 if errors and not stop.requested else 0


# ------------------------------------------------------------------------- backend


def make_backend(name: str, port: int, *, host: str = "127.0.0.1", workers: int = 4,
                 xds: bool = False) -> tuple[grpc.Server, int]:
    """A server (not started) answering ``name`` on ``METHOD``, with the health
    service, and its port (``port=0`` picks a free one).

    ``grpc.so_reuseport`` is off: a second server on the same port fails to bind
    instead of silently sharing it. ``xds=True`` makes an xDS-enabled server that takes
    its listener from the control plane in ``GRPC_XDS_BOOTSTRAP``; gRPC binds it only
    when that arrives, so its port is the one asked for.
    """
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    def get(request: bytes, context: grpc.ServicerContext) -> bytes:
        return name.encode()

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Get": grpc.unary_unary_rpc_method_handler(get)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), xds=xds,
                         options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    return server, (port if xds else bound)


def local_backends(model: Any) -> dict[tuple[str, int], str]:
    """The gRPC backends a mesh model lists on loopback, ``(host, port) -> name`` (the
    endpoint's Pod, else ``<service>-<port>``), from its EndpointSlices."""
    found: dict[tuple[str, int], str] = {}
    for eps in model.endpoint_slices:
        for port in eps.ports:
            if (port.app_protocol or port.name.split("-")[0]) != "grpc":
                continue  # HTTP services are the examples/http apps, not this backend
            for ep in eps.endpoints:
                for address in ep.addresses:
                    if address.startswith("127.") and (address, port.port) not in found:
                        found[address, port.port] = (ep.target_pod
                                                     or f"{eps.service_name}-{port.port}")
    return found


def backend(args: argparse.Namespace) -> int:
    """Serve one backend (``--name``/``--port``), or every local gRPC backend of a mesh
    config (``--config``)."""
    stop = stop_on_signals()
    if args.config:
        from xds_server.sources.yaml_loader import load_model

        wanted = [(name, host, port)
                  for (host, port), name in local_backends(load_model(args.config)).items()]
    else:
        wanted = [(args.name, args.host, args.port)]
    from meshlib.contract import BindError, check_free

    servers = []
    for name, host, port in wanted:
        try:
            if not args.xds:
                check_free(host, port, what=f"serve {name}")  # why, in words, not grpc's
            server, _ = make_backend(name, port, host=host, xds=args.xds)
        except (BindError, RuntimeError) as err:  # grpc: "Failed to bind to address ..."
            print(f"{name}: {err}" if isinstance(err, BindError) else
                  f"{name}: cannot listen on {host}:{port}: {err}", file=sys.stderr)
            for started in servers:
                started.stop(grace=0)
            return 1
        server.start()
        servers.append(server)
        print(f"{name} serving on {host}:{port}", flush=True)
    while not stop.requested:
        time.sleep(0.05)
    for server in servers:
        server.stop(grace=0.5)
    return 0


# --------------------------------------------------------------------- control plane


def control_plane(args: argparse.Namespace) -> int:
    """``meshctl control-plane --insecure`` with warnings only (no INFO lines between
    the splits): plaintext on loopback, which the demo says in its first line."""
    from xds_server.control_plane import ControlPlaneOptions, run

    host, _, port = args.xds_address.rpartition(":")
    admin_host, _, admin_port = args.admin_address.rpartition(":")
    options = ControlPlaneOptions(config=Path(args.config), xds_address=(host, int(port)),
                                  admin_address=(admin_host, int(admin_port)), insecure=True)
    logging.getLogger("xds_server.control_plane").addFilter(
        lambda record: not record.getMessage().startswith("--insecure"))
    asyncio.run(run(options))  # stops on SIGTERM/SIGINT (its own signal handlers)
    return 0


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Run one program: ``argv`` is ``[program, *its arguments]``; ``prog`` names the
    program in its usage line (an example script passes its own path)."""
    own = {"prog": prog} if prog else {}
    parser = argparse.ArgumentParser(prog="python -m meshctl.demo_apps",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="program", required=True)
    be = sub.add_parser("backend", **own, help="a Reviews backend answering its name")
    be.add_argument("--name", help="the name it answers (with --port)")
    be.add_argument("--port", type=int)
    be.add_argument("--host", default="127.0.0.1")
    be.add_argument("--config", help="serve every local gRPC backend of this mesh config "
                                     "(instead of --name and --port)")
    be.add_argument("--xds", action="store_true",
                    help="an xDS-enabled server: its listener comes from the control plane")
    be.set_defaults(func=backend)
    mc = sub.add_parser("meshlib-client", **own, help=meshlib_client.__doc__)
    mc.add_argument("--xds-address", required=True, help="the control plane, host:port")
    _traffic_args(mc, "reviews")
    mc.set_defaults(func=meshlib_client)
    nc = sub.add_parser("native-client", **own, help=native_client.__doc__)
    _traffic_args(nc, NATIVE_TARGET)
    nc.set_defaults(func=native_client)
    cp = sub.add_parser("control-plane", **own, help=control_plane.__doc__)
    cp.add_argument("--config", required=True)
    cp.add_argument("--xds-address", required=True)
    cp.add_argument("--admin-address", required=True)
    cp.set_defaults(func=control_plane)
    args = parser.parse_args(argv)
    if args.program == "backend" and not args.config and (args.name is None
                                                          or args.port is None):
        be.error("give --config, or --name and --port")
    logging.basicConfig(level=logging.WARNING, format=f"{args.program}: %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
