"""``meshctl``: run the control plane, check config, write bootstraps, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshlib.contract.listen import address_of

__all__ = ["main"]

DESCRIPTION = """\
meshctl: run the meshlib control plane, check mesh config, write gRPC xDS bootstraps,
get workload certificates from the mesh CA, and run the demo."""

ADDRESS_HELP = ("HOST:PORT; an empty HOST (:PORT) means 127.0.0.1, loopback only; "
                "0.0.0.0:PORT or [::]:PORT listens on all interfaces")


def _host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``); an empty host is loopback, never every interface."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _xds_target(value: str) -> str:
    """A control plane as a gRPC target: ``HOST:PORT``, or a Unix socket (``unix:/PATH``
    or ``unix:///PATH``, e.g. a local ``meshctl agent``), written ``unix:///abs/path``,
    the form C-core and grpc-js both read."""
    if value.startswith("unix:"):
        path = value.removeprefix("unix:")
        path = path[2:] if path.startswith("///") else path
        if not path or path.startswith("//"):
            raise argparse.ArgumentTypeError(f"expected unix:/PATH, got {value!r}")
        return f"unix://{os.path.abspath(path)}"
    return address_of(*_host_port(value))


TOKEN_ENV = "MESHLIB_TOKEN"  # the bootstrap token, for `certs issue` without --token-file


class _RefuseSecret(argparse.Action):
    """A flag that would put a secret on argv: a usage error saying what to do instead."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        parser.error(f"{option_string}: pass the token with --token-file or {TOKEN_ENV}, "
                     "never on the command line")


def _fail(message: str) -> int:
    print(f"meshctl: {message}", file=sys.stderr)
    return 1


def _cmd_control_plane(args: argparse.Namespace) -> int:
    from xds_server.cluster import ClusterOptions
    from xds_server.control_plane import ControlPlaneOptions, run

    if not args.kubernetes and (args.kubeconfig or args.namespaces):
        print("meshctl: --kubeconfig and --namespaces go with --kubernetes", file=sys.stderr)
        return 2
    if args.kubernetes:
        try:
            import kubernetes  # noqa: F401 - the optional dependency, checked up front
        except ImportError:
            print("meshctl: --kubernetes needs the kubernetes client: pip install "
                  "'meshlib[kubernetes]'", file=sys.stderr)
            return 2
    cluster = None if not args.kubernetes else ClusterOptions(
        kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
        namespaces=tuple(n for n in (args.namespaces or "").split(",") if n))
    options = ControlPlaneOptions(
        config=Path(args.config) if args.config else None,
        kubernetes=cluster,
        xds_address=args.xds_address,
        admin_address=args.admin_address,
        ca_address=args.ca_address,
        ca_dir=Path(args.ca_dir) if args.ca_dir else None,
        token_file=Path(args.token_file) if args.token_file else None,
        insecure=args.insecure,
        tls_names=tuple(args.tls_name),
    )
    try:
        options.check()
    except ValueError as err:
        print(f"meshctl: {err}", file=sys.stderr)
        return 2
    from meshlib.contract import BindError, ConfigError

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(options))
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        # Config problems name files under --config; the CA's and the token file's not.
        in_config = args.config is not None and all(
            str(getattr(p, "source", p)).startswith(args.config) for p in err.problems)
        where = f" in {args.config}" if in_config else ""
        print(f"meshctl: {len(err.problems)} problem(s){where}; not started",
              file=sys.stderr)
        return 1
    except BindError as err:  # e.g. an address already in use: ports are never shared
        hint = " (another control plane?)" if err.errno == errno.EADDRINUSE else ""
        return _fail(f"{err}{hint}")
    except (OSError, RuntimeError) as err:
        return _fail(f"cannot serve: {err}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from xds_server.sources.yaml_loader import YAML_SUFFIXES, check, read_documents

    problems = check(Path(args.path))
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in {args.path}", file=sys.stderr)
        return 1
    documents, _ = read_documents(Path(args.path))
    if not documents:  # nothing checked is not "ok": a wrong path, a typo'd suffix
        if Path(args.path).is_dir():
            patterns = ", ".join(f"*{suffix}" for suffix in YAML_SUFFIXES)
            return _fail(f"{args.path}: no mesh objects found ({patterns})")
        return _fail(f"{args.path}: no mesh objects found in this file")
    print(f"{args.path}: ok")
    return 0


def _writable_dir(path: Path, what: str) -> str | None:
    """Why ``path`` (a directory to write into) will not do, or None."""
    if not path.is_dir():
        missing = "does not exist" if not path.exists() else "is not a directory"
        return f"cannot write {what}: directory {path} {missing}"
    return None


if TYPE_CHECKING:
    from xds_server.bootstrap import BootstrapOptions, EnvoyBootstrapOptions

NO_CLIENT_CERT_WARNING = (
    "meshctl: warning: --ca-root without --cert-dir: no client certificate on the xDS "
    "channel, and a control plane in its default (secure) mode refuses such clients; give "
    "--cert-dir DIR (meshctl certs issue --out-dir DIR fills it)")
_ENVOY_ONLY = ("xds_name", "admin_port", "outbound_port", "delta")


def _bootstrap_options(
        args: argparse.Namespace) -> BootstrapOptions | EnvoyBootstrapOptions | str:
    """The options ``args`` ask for (gRPC's or Envoy's), or a usage error's text."""
    from xds_server.bootstrap import (
        DEFAULT_ENVOY_ADMIN_PORT,
        DEFAULT_XDS_NAME,
        BootstrapOptions,
        EnvoyBootstrapOptions,
    )

    cert_dir = os.path.abspath(args.cert_dir) if args.cert_dir else ""
    ca_root = os.path.abspath(args.ca_root) if args.ca_root else ""
    common = {"xds_address": args.xds_address, "node_id": args.node_id,
              "namespace": args.namespace, "cluster": args.cluster, "zone": args.zone,
              "cert_dir": cert_dir, "ca_root": ca_root}
    if not args.envoy:
        given = [f"--{flag.replace('_', '-')}" for flag in _ENVOY_ONLY
                 if getattr(args, flag) not in (None, False)]
        if given:
            return f"{', '.join(given)}: for an Envoy bootstrap only (add --envoy)"
        return BootstrapOptions(**common)
    if cert_dir and not ca_root:
        return ("--envoy --cert-dir: the certificate is Envoy's client certificate to the "
                "control plane, over TLS: give --ca-root FILE too")
    if ca_root and not args.output:
        return ("--envoy --ca-root: Envoy reads its TLS files through SDS files written "
                "beside the bootstrap: give --output FILE")
    if args.xds_address.startswith("unix:"):
        return ("--envoy: Envoy reaches the control plane over TCP (HOST:PORT), with TLS of "
                "its own; meshctl agent is for xDS clients without TLS")
    prefix = str(Path(args.output).resolve().with_suffix("")) if args.output else ""
    return EnvoyBootstrapOptions(
        **common, xds_name=args.xds_name or DEFAULT_XDS_NAME, secrets_prefix=prefix,
        admin_port=DEFAULT_ENVOY_ADMIN_PORT if args.admin_port is None else args.admin_port,
        outbound_port=args.outbound_port, delta=args.delta)


def _cmd_bootstrap(args: argparse.Namespace) -> int:
    import json

    from xds_server.bootstrap import EnvoyBootstrapOptions, bootstrap_json, envoy_secret_files

    options = _bootstrap_options(args)
    if isinstance(options, str):
        print(f"meshctl bootstrap: {options}", file=sys.stderr)
        return 2
    if args.ca_root and not args.cert_dir:
        print(NO_CLIENT_CERT_WARNING, file=sys.stderr)
    text = bootstrap_json(options)
    if not args.output:
        sys.stdout.write(text)
        return 0
    output = Path(args.output)
    why = _writable_dir(output.parent, str(output))
    if why is not None:
        return _fail(why)
    files = {output: text}
    if isinstance(options, EnvoyBootstrapOptions):
        files |= {Path(path): json.dumps(secret, indent=2) + "\n"
                  for path, secret in envoy_secret_files(options).items()}
    for path, content in files.items():
        try:
            path.write_text(content)
        except OSError as err:
            return _fail(f"cannot write {path}: {(err.strerror or str(err)).lower()}")
    return 0


def _cmd_certs_root(args: argparse.Namespace) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from meshlib.contract import ConfigError
    from xds_server.ca import DirectoryCaStore

    directory = Path(args.ca_dir)
    try:
        found = DirectoryCaStore(directory).load() if directory.is_dir() else None
    except ConfigError as err:  # a CA directory others may write
        return _fail("; ".join(str(p) for p in err.problems))
    if found is None:
        return _fail(f"{directory}: no CA there yet (control-plane --ca-dir creates it)")
    try:
        root = x509.load_pem_x509_certificates(found[1])[-1].public_bytes(Encoding.PEM)
    except ValueError as err:
        return _fail(f"{directory}: unreadable CA certificate: {err}")
    if args.output:
        Path(args.output).write_bytes(root)
    else:
        sys.stdout.write(root.decode())
    return 0


def _cmd_certs_issue(args: argparse.Namespace) -> int:
    from meshlib.contract import CertificateError, SpiffeId
    from meshlib.security import read_roots, request_certificate, write_files

    address = address_of(*args.ca_address)
    out_dir = Path(args.out_dir)
    try:  # before asking the CA: a certificate nobody can store is wasted
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return _fail(f"cannot write certificates to {out_dir}: "
                     f"{(err.strerror or str(err)).lower()}")
    try:
        identity = SpiffeId(args.trust_domain, args.namespace, args.service_account)
        token = (Path(args.token_file).read_text() if args.token_file
                 else os.environ.get(TOKEN_ENV, "")).strip()
        if not token:
            return _fail(f"no bootstrap token: give --token-file FILE or set {TOKEN_ENV}")
        roots = read_roots(args.ca_root) if args.ca_root else None
        cert = asyncio.run(request_certificate(address, identity, token, ttl=args.ttl,
                                               roots_pem=roots))
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


def _cmd_agent(args: argparse.Namespace) -> int:
    from meshctl.agent import DEFAULT_CA_PORT, AgentOptions, parse_listen, run_agent
    from meshlib.contract import BindError, CertificateError, SpiffeId
    from meshlib.security import CertificateSource, FileCertificates, IssuedCertificates

    def usage(message: str) -> int:
        print(f"meshctl agent: {message}", file=sys.stderr)
        return 2

    try:
        listen = parse_listen(args.listen, allow_non_loopback=args.allow_non_loopback)
    except ValueError as err:
        return usage(f"--listen: {err}")
    xds_host, _ = args.xds_address
    if not (args.ca_root or args.cert_dir or args.insecure_upstream):
        return usage("--ca-root FILE is needed: the control plane is verified against the "
                     "mesh root pinned there (or --cert-dir, whose ca.pem is used; "
                     "--insecure-upstream for a control plane run with --insecure)")
    certificates: CertificateSource | None = None
    if args.cert_dir:
        certificates = FileCertificates(args.cert_dir)
    elif args.service_account:
        token = None if args.token_file else os.environ.get(TOKEN_ENV, "").strip()
        if not args.token_file and not token:
            return usage(f"no bootstrap token: give --token-file FILE or set {TOKEN_ENV}")
        try:
            identity = SpiffeId(args.trust_domain, args.namespace, args.service_account)
        except ValueError as err:
            return usage(str(err))
        ca_address = args.ca_address or (
            args.xds_address if args.insecure_upstream else (xds_host, DEFAULT_CA_PORT))
        certificates = IssuedCertificates(address_of(*ca_address), identity, token=token,
                                          token_file=args.token_file, ttl=args.ttl,
                                          ca_root=args.ca_root or None)
    elif not args.insecure_upstream:
        return usage("no identity: give --service-account (and --token-file) to get a "
                     "certificate from the mesh CA, or --cert-dir")
    if args.out_dir and certificates is None:
        return usage("--out-dir needs an identity (--service-account or --cert-dir)")
    options = AgentOptions(
        xds_address=address_of(*args.xds_address), listen=listen,
        ca_root=Path(args.ca_root) if args.ca_root else None, server_name=args.server_name,
        insecure_upstream=args.insecure_upstream,
        out_dir=Path(args.out_dir) if args.out_dir else None,
        ready_file=Path(args.ready_file) if args.ready_file else None)
    if args.insecure_upstream:
        logging.getLogger("meshctl.agent").warning(
            "--insecure-upstream: xDS%s goes to the control plane in plaintext",
            "" if certificates is None or args.ca_root else " and the token")
    try:
        asyncio.run(run_agent(options, certificates))
    except BindError as err:
        return _fail(str(err))
    except CertificateError as err:
        return _fail(f"agent: no certificate: {err}")
    except OSError as err:  # the ready file's directory, the certificate directory
        return _fail(f"agent: {err}")
    return 0


def _add_agent_parser(sub: Any) -> None:
    agent = sub.add_parser(
        "agent", help="a local plaintext xDS endpoint forwarding over mTLS, for xDS "
                      "clients without TLS (Node's grpc-js-xds)",
        description="Listen on loopback or a Unix socket, in plaintext, for the workload "
                    "beside it, and forward its ADS streams to the control plane over mTLS "
                    "with the workload's certificate. Point meshctl bootstrap "
                    "--xds-address at the --listen address. SIGTERM/SIGINT stop it.")
    agent.add_argument("--xds-address", type=_host_port, required=True, metavar="HOST:PORT",
                       help="the control plane's xDS port")
    agent.add_argument("--listen", default="127.0.0.1:15011",
                       metavar="HOST:PORT|unix:/PATH",
                       help="where the workload connects: a loopback address (an empty HOST "
                            "is 127.0.0.1; port 0 picks one) or a Unix socket, created 0600 "
                            "(its directory 0700 if missing) (default: %(default)s)")
    agent.add_argument("--allow-non-loopback", action="store_true",
                       help="let --listen name a non-loopback address: whoever reaches it "
                            "gets this workload's configuration under its identity")
    agent.add_argument("--ca-root", default="", metavar="FILE",
                       help="the mesh root (PEM) the control plane and the CA are verified "
                            "against (required, unless --cert-dir's ca.pem serves or "
                            "--insecure-upstream)")
    agent.add_argument("--server-name", default="", metavar="NAME",
                       help="the name the control plane's certificate must carry (default: "
                            "the --xds-address host)")
    agent.add_argument("--insecure-upstream", action="store_true",
                       help="plaintext to a control plane run with --insecure (not verified)")
    ident = agent.add_mutually_exclusive_group()
    ident.add_argument("--service-account", metavar="SA",
                       help="get this workload's certificate from the mesh CA: "
                            "spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SA, renewed at half-life")
    ident.add_argument("--cert-dir", metavar="DIR",
                       help="or use the mounted cert.pem, key.pem and ca.pem here "
                            "(followed on change)")
    agent.add_argument("--namespace", default="default", help="(default: %(default)s)")
    agent.add_argument("--trust-domain", default="cluster.local",
                       help="(default: %(default)s)")
    agent.add_argument("--ca-address", type=_host_port, default=None, metavar="HOST:PORT",
                       help="the mesh CA (default: the --xds-address host, port 15012; with "
                            "--insecure-upstream, the xDS address)")
    agent.add_argument("--token-file", metavar="FILE",
                       help=f"the bootstrap token, re-read on each request (or set "
                            f"{TOKEN_ENV}; never on the command line)")
    agent.add_argument("--token", action=_RefuseSecret, help=argparse.SUPPRESS)
    agent.add_argument("--ttl", type=float, default=None,
                       help="certificate lifetime, seconds (default: the mesh's)")
    agent.add_argument("--out-dir", metavar="DIR",
                       help="also write cert.pem, key.pem (0600) and ca.pem here for the "
                            "workload's own mTLS, rewritten on rotation (default: off)")
    agent.add_argument("--ready-file", metavar="FILE",
                       help="write the listen address (as bootstrap --xds-address takes it) "
                            "here once serving; removed on stop")
    agent.set_defaults(func=_cmd_agent)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshctl", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    cp = sub.add_parser(
        "control-plane", help="serve xDS (ADS) and the mesh CA from config files",
        description="Serve xDS (ADS) and the mesh CA from mesh config. Secure by default: "
                    "ADS over mTLS to workloads that prove their identity with a mesh "
                    "certificate (the namespace they see is their identity's), the CA "
                    "over TLS to workloads with a token; both with a serving certificate "
                    "from the CA in --ca-dir, which workloads verify against the root "
                    "they pin (Mesh(ca_root=...), meshctl bootstrap --ca-root). "
                    f"Addresses are {ADDRESS_HELP}.")
    source = cp.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="PATH",
                        help="a YAML file or a directory of them (reloaded on change)")
    source.add_argument("--kubernetes", action="store_true",
                        help="read config from the Kubernetes API server (in-cluster, or "
                             "--kubeconfig): Services, EndpointSlices, GRPCRoutes, "
                             "HTTPRoutes and the meshlib.dev policies; the leader writes "
                             "their status; the CA lives in a Secret and workloads' "
                             "tokens are checked with TokenReview")
    cp.add_argument("--kubeconfig", default=None, metavar="FILE",
                    help="with --kubernetes: a kubeconfig (default: in-cluster, else "
                         "$KUBECONFIG or ~/.kube/config)")
    cp.add_argument("--namespaces", default=None, metavar="NS[,NS...]",
                    help="with --kubernetes: read only these namespaces (default: all)")
    cp.add_argument("--xds-address", type=_host_port, default="127.0.0.1:15010",
                    metavar="HOST:PORT",
                    help="serve ADS here (mTLS; with --insecure, plaintext and the CA "
                         "too); never shared with another server (default: %(default)s)")
    cp.add_argument("--ca-address", type=_host_port, default=None, metavar="HOST:PORT",
                    help="serve the certificate service here, over TLS (default: the "
                         "--xds-address host, port 15012; with --insecure, the xDS port)")
    cp.add_argument("--ca-dir", default=None, metavar="DIR",
                    help="the mesh CA's key and certificate (created on first start, key "
                         "mode 0600); required unless --insecure")
    cp.add_argument("--token-file", default=None, metavar="FILE",
                    help="bootstrap tokens (YAML) that authenticate certificate requests "
                         "(default: none, so the CA refuses every request)")
    cp.add_argument("--admin-address", type=_host_port, default=None, metavar="HOST:PORT",
                    help="serve /healthz, /readyz, /metrics, /debug/config_dump here "
                         "(default: off)")
    cp.add_argument("--insecure", action="store_true",
                    help="plaintext, and any client may subscribe and claim a namespace: "
                         "for a development machine only (logs a warning)")
    cp.add_argument("--tls-name", action="append", default=[], metavar="NAME",
                    help="a DNS name or IP clients dial, for the serving certificate; "
                         "repeat for several (default: "
                         "meshlib-control-plane.meshlib-system.svc, localhost, 127.0.0.1, "
                         "::1 and the --xds-address and --ca-address hosts)")
    cp.set_defaults(func=_cmd_control_plane)

    ck = sub.add_parser("check", help="validate config; exit 1 with one line per problem",
                        description="Validate mesh config: exit 0, or exit 1 with one line "
                                    "per problem (also when PATH holds no mesh objects).")
    ck.add_argument("path", metavar="PATH", help="a YAML file or a directory of them")
    ck.set_defaults(func=_cmd_check)

    bs = sub.add_parser(
        "bootstrap", help="write a gRPC xDS bootstrap for native gRPC, or Envoy's (--envoy)",
        description="Write the xDS bootstrap of a workload that does not run meshlib: "
                    "native gRPC's (GRPC_XDS_BOOTSTRAP), or with --envoy Envoy's (-c). "
                    "Against a control plane in its default secure mode give --ca-root "
                    "and --cert-dir: its xDS port requires a client certificate.")
    bs.add_argument("--xds-address", type=_xds_target, required=True,
                    metavar="HOST:PORT|unix:/PATH",
                    help="the control plane, as the workload reaches it (or a local "
                         "meshctl agent: its --listen address)")
    bs.add_argument("--node-id", required=True)
    bs.add_argument("--namespace", default="default", help="(default: %(default)s)")
    bs.add_argument("--cluster", default="",
                    help="node.cluster (e.g. the service name; default: empty, for Envoy "
                         "the node id)")
    bs.add_argument("--zone", default="", help="node.locality.zone (default: empty)")
    bs.add_argument("--cert-dir", default="", metavar="DIR",
                    help="the directory holding cert.pem, key.pem and ca.pem (as meshctl "
                         "certs issue --out-dir writes them): with --ca-root, the client "
                         "certificate of the xDS channel (mTLS); for native gRPC also mTLS "
                         "between workloads. Re-read on change (gRPC every 10 s; Envoy "
                         "when a file is renamed into DIR) (default: none)")
    bs.add_argument("--ca-root", default="", metavar="FILE",
                    help="connect to the control plane over TLS, verified against the "
                         "mesh root in this PEM file (meshctl certs root prints it; gRFC A65 "
                         "'tls' channel credentials; Envoy: an UpstreamTlsContext) "
                         "(default: plaintext, for a control plane run with --insecure)")
    envoy = bs.add_argument_group("Envoy")
    envoy.add_argument("--envoy", action="store_true",
                       help="write an Envoy bootstrap (ADS over gRPC to the static cluster "
                            "xds_cluster); with --ca-root its TLS files are read through "
                            "SDS files written beside --output: OUTPUT-xds-roots.json, "
                            "OUTPUT-xds-cert.json")
    envoy.add_argument("--xds-name", default=None, metavar="NAME",
                       help="the name the control plane's certificate must carry (SNI "
                            "and SAN; a DNS name or an IP; default: "
                            "meshlib-control-plane.meshlib-system.svc)")
    envoy.add_argument("--admin-port", type=int, default=None, metavar="PORT",
                       help="Envoy's admin port, on 127.0.0.1 only (default: 15000)")
    envoy.add_argument("--outbound-port", type=int, default=None, metavar="PORT",
                       help="the outbound listener's port (node metadata OUTBOUND_PORT; "
                            "default: the MeshConfig's sidecar outboundPort, 15001)")
    envoy.add_argument("--delta", action="store_true",
                       help="incremental xDS (api_type DELTA_GRPC; default: state of the "
                            "world)")
    bs.add_argument("-o", "--output", metavar="FILE",
                    help="file to write; its directory must exist (default: stdout)")
    bs.set_defaults(func=_cmd_bootstrap)

    certs = sub.add_parser("certs", help="workload certificates from the mesh CA")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True)
    issue = certs_sub.add_parser(
        "issue", help="get a certificate for a workload that does not run meshlib; writes "
                      "key.pem (0600), cert.pem and ca.pem, as bootstrap --cert-dir expects")
    issue.add_argument("--ca-address", "--xds-address", dest="ca_address", type=_host_port,
                       required=True, metavar="HOST:PORT",
                       help="the control plane's certificate service (its own port, 15012 "
                            "by default; the xDS port of an --insecure control plane)")
    issue.add_argument("--namespace", default="default", help="(default: %(default)s)")
    issue.add_argument("--service-account", required=True)
    issue.add_argument("--trust-domain", default="cluster.local",
                       help="(default: %(default)s)")
    issue.add_argument("--token-file", metavar="FILE",
                       help=f"file holding the bootstrap token (or set {TOKEN_ENV}; a "
                            "token is never taken on the command line, where other users "
                            "read it in the process list)")
    # Refuse --token by name: otherwise argparse takes it as short for --token-file.
    issue.add_argument("--token", action=_RefuseSecret, help=argparse.SUPPRESS)
    issue.add_argument("--ttl", type=float, default=None,
                       help="seconds (default and maximum: MeshConfig certificateTTL)")
    issue.add_argument("--ca-root", default="", metavar="FILE",
                       help="talk to the CA over TLS, verified against the mesh root in "
                            "this PEM file; the certificate must chain to it (for a "
                            "control plane run with --tls; default: plaintext)")
    issue.add_argument("--out-dir", required=True, metavar="DIR",
                       help="where to write the files (created if missing)")
    issue.set_defaults(func=_cmd_certs_issue)
    root = certs_sub.add_parser(
        "root", help="print the mesh's root certificate (PEM), the file workloads pin: "
                     "Mesh(ca_root=...), MESHLIB_CA_ROOT, bootstrap/certs issue --ca-root")
    root.add_argument("--ca-dir", required=True, metavar="DIR",
                      help="the control plane's CA directory (as control-plane --ca-dir)")
    root.add_argument("-o", "--output", metavar="FILE", help="(default: stdout)")
    root.set_defaults(func=_cmd_certs_root)

    demo = sub.add_parser(
        "demo", help="the whole mesh on one machine, with live traffic",
        description="Ctrl-C or SIGTERM stops every process it started; exit status 130 "
                    "(SIGINT) or 143 (SIGTERM), 1 if a backend port is taken")
    demo.add_argument("--config", help="default: the demo config shipped with meshctl "
                                       "(the same files as examples/mesh)")
    demo.add_argument("--seconds", type=float, default=24.0,
                      help="how long the clients drive traffic (default: 24)")
    demo.add_argument("--access-logs", action="store_true",
                      help="turn on MeshConfig accessLogs for this run (one JSON line a call)")
    demo.set_defaults(func=_cmd_demo)
    _add_agent_parser(sub)
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
