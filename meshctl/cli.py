"""``meshctl``: run the control plane, check config, write bootstraps, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
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
        ca_dir=Path(args.ca_dir) if args.ca_dir else None,
        token_file=Path(args.token_file) if args.token_file else None,
    )
    from meshlib.contract import ConfigError

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
            cert_dir=os.path.abspath(args.cert_dir) if args.cert_dir else "",
        )
    )
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_certs_issue(args: argparse.Namespace) -> int:
    from meshlib.contract import CertificateError, SpiffeId
    from meshlib.security import request_certificate, write_files

    host, port = args.xds_address
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        identity = SpiffeId(args.trust_domain, args.namespace, args.service_account)
        token = args.token if args.token else Path(args.token_file).read_text().strip()
        cert = asyncio.run(request_certificate(address, identity, token, ttl=args.ttl))
        write_files(Path(args.out_dir), cert)
    except (ValueError, OSError, CertificateError) as err:
        print(f"meshctl: no certificate: {err}", file=sys.stderr)
        return 1
    print(f"{args.out_dir}: {identity} serial {cert.serial:x} valid until "
          f"{cert.not_after.isoformat()}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from meshctl.demo import run_demo

    return run_demo(Path(args.config) if args.config else None, seconds=args.seconds,
                    access_logs=args.access_logs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshctl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    cp = sub.add_parser("control-plane", help="serve xDS (ADS) from config files")
    cp.add_argument("--config", help="a YAML file or a directory of them (reloaded on change)")
    cp.add_argument("--kubernetes", action="store_true", help="read config from the API server")
    cp.add_argument("--xds-address", type=_host_port, default=("127.0.0.1", 15010))
    cp.add_argument("--ca-dir", default=None,
                    help="run the mesh CA: its key and certificate live here (created on "
                         "first start, key mode 0600)")
    cp.add_argument("--token-file", default=None,
                    help="bootstrap tokens (YAML) that authenticate certificate requests")
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
    bs.add_argument("--cert-dir", default="",
                    help="mTLS: the directory holding cert.pem, key.pem and ca.pem (gRPC's "
                         "file_watcher certificate provider re-reads them every 10 s)")
    bs.add_argument("-o", "--output", help="file to write (default: stdout)")
    bs.set_defaults(func=_cmd_bootstrap)

    certs = sub.add_parser("certs", help="workload certificates from the mesh CA")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True)
    issue = certs_sub.add_parser(
        "issue", help="get a certificate for a workload that does not run meshlib; writes "
                      "key.pem (0600), cert.pem and ca.pem, as bootstrap --cert-dir expects")
    issue.add_argument("--xds-address", type=_host_port, required=True,
                       help="the control plane (its CA serves on the xDS port)")
    issue.add_argument("--namespace", default="default")
    issue.add_argument("--service-account", required=True)
    issue.add_argument("--trust-domain", default="cluster.local")
    token = issue.add_mutually_exclusive_group(required=True)
    token.add_argument("--token-file", help="file holding the bootstrap token")
    token.add_argument("--token", help="the bootstrap token (prefer --token-file)")
    issue.add_argument("--ttl", type=float, default=None,
                       help="seconds (default and maximum: MeshConfig certificateTTL)")
    issue.add_argument("--out-dir", required=True)
    issue.set_defaults(func=_cmd_certs_issue)

    demo = sub.add_parser(
        "demo", help="the whole mesh on one machine, with live traffic",
        description="Ctrl-C or SIGTERM stops every process it started; exit status 130 "
                    "(SIGINT) or 143 (SIGTERM), 1 if a backend port is taken")
    demo.add_argument("--config", help="default: the demo config shipped with meshctl "
                                       "(the same files as examples/mesh)")
    demo.add_argument("--seconds", type=float, default=24.0)
    demo.add_argument("--access-logs", action="store_true",
                      help="turn on MeshConfig accessLogs for this run (one JSON line a call)")
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
