"""``meshctl``: run the control plane, check config, write bootstraps, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path

__all__ = ["main"]


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _cmd_control_plane(args: argparse.Namespace) -> int:
    from xds_server.control_plane import ControlPlaneOptions, run

    if args.kubernetes:
        print("meshctl: --kubernetes is not available yet; use --config", file=sys.stderr)
        return 2
    if args.config is None:
        print("meshctl: control-plane needs --config PATH", file=sys.stderr)
        return 2
    options = ControlPlaneOptions(
        config=Path(args.config),
        xds_address=args.xds_address,
        admin_address=args.admin_address,
    )
    from meshlib.errors import ConfigError

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(options))
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        print(f"meshctl: {len(err.problems)} problem(s) in {args.config}; not started",
              file=sys.stderr)
        return 1
    except (OSError, RuntimeError) as err:  # e.g. an address already in use
        print(f"meshctl: cannot serve: {err}", file=sys.stderr)
        return 1
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from xds_server.sources.yaml_loader import check

    problems = check(Path(args.path))
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in {args.path}", file=sys.stderr)
        return 1
    print(f"{args.path}: ok")
    return 0


def _cmd_bootstrap(args: argparse.Namespace) -> int:
    from xds_server.bootstrap import BootstrapOptions, bootstrap_json

    host, port = args.xds_address
    text = bootstrap_json(
        BootstrapOptions(
            xds_address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            node_id=args.node_id,
            namespace=args.namespace,
            cluster=args.cluster,
            zone=args.zone,
        )
    )
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from xds_server.demo import run_demo

    config = Path(args.config) if args.config else (
        Path(__file__).resolve().parents[1] / "examples" / "mesh")
    return run_demo(config, seconds=args.seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshctl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    cp = sub.add_parser("control-plane", help="serve xDS (ADS) from config files")
    cp.add_argument("--config", help="a YAML file or a directory of them (reloaded on change)")
    cp.add_argument("--kubernetes", action="store_true", help="read config from the API server")
    cp.add_argument("--xds-address", type=_host_port, default=("127.0.0.1", 15010))
    cp.add_argument("--admin-address", type=_host_port, default=None,
                    help="serve /healthz, /readyz, /metrics, /debug/config_dump here")
    cp.set_defaults(func=_cmd_control_plane)

    ck = sub.add_parser("check", help="validate config; exit 1 with one line per problem")
    ck.add_argument("path")
    ck.set_defaults(func=_cmd_check)

    bs = sub.add_parser("bootstrap", help="write a gRPC xDS bootstrap for native gRPC")
    bs.add_argument("--xds-address", type=_host_port, required=True)
    bs.add_argument("--node-id", required=True)
    bs.add_argument("--namespace", default="default")
    bs.add_argument("--cluster", default="", help="node.cluster (e.g. the service name)")
    bs.add_argument("--zone", default="", help="node.locality.zone")
    bs.add_argument("-o", "--output", help="file to write (default: stdout)")
    bs.set_defaults(func=_cmd_bootstrap)

    demo = sub.add_parser("demo", help="the whole mesh on one machine, with live traffic")
    demo.add_argument("--config", help="default: the examples/mesh shipped with meshlib")
    demo.add_argument("--seconds", type=float, default=24.0)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
