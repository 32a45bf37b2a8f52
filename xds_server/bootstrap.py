"""The gRPC xDS bootstrap file, for native gRPC clients and servers in any language.

gRPC reads it from the file named by ``GRPC_XDS_BOOTSTRAP`` (or the JSON itself in
``GRPC_XDS_BOOTSTRAP_CONFIG``) the first time an ``xds:///`` channel or an xDS server
is created. Format: https://github.com/grpc/proposal/blob/master/A27-xds-global-load-balancing.md

One file for every gRPC: it passes C-core's checks (grpcio, C++, Ruby, PHP, ...) and the
stricter ones of Node's ``@grpc/grpc-js-xds`` (``src/xds-bootstrap.ts``: ``node.locality``
required, and at least one ``insecure`` or ``google_default`` channel credential).

With a certificate directory (``cert_dir``) the bootstrap also declares the
``file_watcher`` certificate provider ``meshlib`` (gRFC A29) that the control plane's
TLS contexts name, and tells the control plane so (node metadata ``MESHLIB_TLS``).

With the mesh root (``ca_root``) the xDS channel is TLS (gRFC A65 ``tls`` channel
credentials), verified against that root; with ``cert_dir`` as well it is mTLS with the
workload's certificate, which the control plane's xDS port requires (it takes the
node's namespace from it). gRPC re-reads the files every :data:`CERT_REFRESH_INTERVAL`.

:func:`envoy_bootstrap` writes the same for Envoy (see its docstring).
"""

from __future__ import annotations

import ipaddress
import json
import posixpath
from dataclasses import dataclass
from typing import Any

from meshlib.contract import (
    CA_FILE,
    CERT_FILE,
    DEFAULT_NAMESPACE,
    ENVOY_NODE,
    GRPC_NODE,
    KEY_FILE,
    KIND_METADATA_KEY,
    NAMESPACE_METADATA_KEY,
    OUTBOUND_PORT_METADATA_KEY,
    SERVER_LISTENER_TEMPLATE,
    TLS_METADATA_KEY,
)
from xds_server.ca import DEFAULT_SERVING_NAMES
from xds_server.translate.security import CERT_PROVIDER_INSTANCE

__all__ = [
    "CA_FILE",
    "CERT_FILE",
    "CERT_REFRESH_INTERVAL",
    "DEFAULT_ENVOY_ADMIN_PORT",
    "DEFAULT_XDS_NAME",
    "KEY_FILE",
    "XDS_CERT_SECRET",
    "XDS_CLUSTER",
    "XDS_ROOTS_SECRET",
    "BootstrapOptions",
    "EnvoyBootstrapOptions",
    "bootstrap_json",
    "envoy_bootstrap",
    "envoy_secret_files",
    "make_bootstrap",
]

# The files of a certificate directory (CERT_FILE, KEY_FILE, CA_FILE) are
# meshlib.contract.names': the same names meshlib's FileCertificates reads.
CERT_REFRESH_INTERVAL = "10s"  # how often gRPC re-reads them (rotation)


@dataclass(frozen=True, slots=True, kw_only=True)
class BootstrapOptions:
    """What goes into a bootstrap: where the control plane is and who the node is."""

    xds_address: str
    node_id: str
    namespace: str = DEFAULT_NAMESPACE
    cluster: str = ""
    zone: str = ""
    kind: str = GRPC_NODE
    # Holds cert.pem, key.pem, ca.pem: mTLS between workloads and, with ca_root, the
    # client certificate of the xDS channel ("" = none).
    cert_dir: str = ""
    ca_root: str = ""  # the mesh root (PEM): TLS to the control plane ("" = plaintext)
    refresh_interval: str = CERT_REFRESH_INTERVAL  # how often gRPC re-reads the files


def make_bootstrap(options: BootstrapOptions) -> dict[str, Any]:
    """The bootstrap as a dict (see :func:`bootstrap_json` for the file text).

    Example::

        >>> b = make_bootstrap(BootstrapOptions(xds_address="127.0.0.1:15010", node_id="a"))
        >>> b["xds_servers"][0]["server_uri"]
        '127.0.0.1:15010'
    """
    node: dict[str, Any] = {
        "id": options.node_id,
        # Always present, even empty: grpc-js-xds refuses a node without it ("locality
        # field missing in node element"); C-core takes {} as no locality.
        "locality": {"zone": options.zone} if options.zone else {},
        "metadata": {
            NAMESPACE_METADATA_KEY: options.namespace,
            KIND_METADATA_KEY: options.kind,
        },
    }
    if options.cluster:
        node["cluster"] = options.cluster
    bootstrap: dict[str, Any] = {
        "xds_servers": [
            {
                "server_uri": options.xds_address,
                "channel_creds": [_channel_creds(options)],
                "server_features": ["xds_v3"],
            }
        ],
        "node": node,
        "server_listener_resource_name_template": SERVER_LISTENER_TEMPLATE,
    }
    if options.cert_dir:
        node["metadata"][TLS_METADATA_KEY] = "true"
        bootstrap["certificate_providers"] = {
            CERT_PROVIDER_INSTANCE: _file_watcher(options.cert_dir, options.refresh_interval)}
    return bootstrap


def _channel_creds(options: BootstrapOptions) -> dict[str, Any]:
    """How to reach the control plane: plaintext, or TLS verified against the mesh root,
    with the workload's certificate when there is a ``cert_dir`` (gRFC A65 ``tls``
    credentials, which C-core gRPC reads, re-reading the files every
    ``refresh_interval``; Node's grpc-js-xds 1.14 accepts only ``insecure`` and
    ``google_default``)."""
    if not options.ca_root:
        return {"type": "insecure"}
    config = {"ca_certificate_file": options.ca_root}
    if options.cert_dir:
        config |= {"certificate_file": posixpath.join(options.cert_dir, CERT_FILE),
                   "private_key_file": posixpath.join(options.cert_dir, KEY_FILE)}
    return {"type": "tls", "config": config | {"refresh_interval": options.refresh_interval}}


def _file_watcher(cert_dir: str, refresh_interval: str) -> dict[str, Any]:
    """gRPC's ``file_watcher`` certificate provider over the three files of ``cert_dir``.

    The directory is kept as given (the CLI makes it absolute): it is a path on the
    workload's machine, which need not be this one.
    """
    return {
        "plugin_name": "file_watcher",
        "config": {
            "certificate_file": posixpath.join(cert_dir, CERT_FILE),
            "private_key_file": posixpath.join(cert_dir, KEY_FILE),
            "ca_certificate_file": posixpath.join(cert_dir, CA_FILE),
            "refresh_interval": refresh_interval,
        },
    }


def bootstrap_json(options: BootstrapOptions | EnvoyBootstrapOptions) -> str:
    """The bootstrap file text, indented JSON (gRPC's, or Envoy's for
    :class:`EnvoyBootstrapOptions`)."""
    made = (envoy_bootstrap(options) if isinstance(options, EnvoyBootstrapOptions)
            else make_bootstrap(options))
    return json.dumps(made, indent=2) + "\n"


# ---------------------------------------------------------------------------- Envoy

#: The name Envoy checks the control plane's serving certificate for (SNI and SAN),
#: unless told: the control plane's in-cluster Service (deploy/), the first of
#: :data:`xds_server.ca.DEFAULT_SERVING_NAMES`.
DEFAULT_XDS_NAME = DEFAULT_SERVING_NAMES[0]
DEFAULT_ENVOY_ADMIN_PORT = 15000  # Istio's; always on 127.0.0.1
XDS_CLUSTER = "xds_cluster"  # the static cluster Envoy's ADS stream uses
XDS_CERT_SECRET = "xds_client_certificate"  # SDS names, local to the bootstrap
XDS_ROOTS_SECRET = "xds_control_plane_roots"
_SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
_UPSTREAM_TLS = ("type.googleapis.com/"
                 "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext")
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvoyBootstrapOptions:
    """What goes into an Envoy bootstrap: the control plane, the node, Envoy's ports and
    the files of its TLS to the control plane.

    ``secrets_prefix``: with ``ca_root``, the SDS files (:func:`envoy_secret_files`)
    are ``<prefix>-xds-roots.json`` and, with ``cert_dir``, ``<prefix>-xds-cert.json``
    (``meshctl bootstrap --envoy -o envoy.json`` uses ``envoy``, beside the file).
    """

    xds_address: str  # HOST:PORT ([v6]:PORT), as Envoy reaches the control plane
    node_id: str
    namespace: str = DEFAULT_NAMESPACE
    cluster: str = ""  # node.cluster ("": the node id)
    zone: str = ""
    ca_root: str = ""  # the mesh root (PEM): TLS to the control plane ("" = plaintext)
    cert_dir: str = ""  # the workload's cert.pem / key.pem: mTLS (needs ca_root)
    xds_name: str = DEFAULT_XDS_NAME  # the control plane's certificate name (SNI, SAN)
    secrets_prefix: str = ""
    admin_port: int = DEFAULT_ENVOY_ADMIN_PORT
    outbound_port: int | None = None  # None: the MeshConfig's sidecar outboundPort
    delta: bool = False  # incremental xDS (DELTA_GRPC) instead of state of the world

    def __post_init__(self) -> None:
        if self.cert_dir and not self.ca_root:
            raise ValueError("a client certificate (cert_dir) is for TLS to the control "
                             "plane: give the mesh root (ca_root) too")
        if self.ca_root and not self.secrets_prefix:
            raise ValueError("TLS to the control plane reads its files through SDS "
                             "files: give secrets_prefix (where they go)")


def envoy_bootstrap(options: EnvoyBootstrapOptions) -> dict[str, Any]:
    """Envoy's bootstrap: ADS over gRPC (HTTP/2) to the static cluster ``xds_cluster``,
    the node as the control plane groups it (``user_agent_name`` ``envoy``, metadata
    ``NAMESPACE`` and ``OUTBOUND_PORT``), admin on 127.0.0.1 only.

    With ``ca_root`` the cluster's transport socket is TLS: the control plane's
    certificate must chain to the pinned root and name ``xds_name`` (SNI and SAN); with
    ``cert_dir`` Envoy shows the workload's certificate (mTLS). Both come through
    file-based SDS (:func:`envoy_secret_files`, written beside the bootstrap) with a
    ``watched_directory``: Envoy re-reads the files when one is renamed into the
    directory (an atomic write, or Kubernetes' ``..data`` swap), so a rotation needs no
    restart. (Files named directly in a static ``tls_certificates`` are read once.)

    Example::

        >>> b = envoy_bootstrap(EnvoyBootstrapOptions(xds_address="10.0.0.7:15010",
        ...                                           node_id="web-1"))
        >>> b["static_resources"]["clusters"][0]["name"]
        'xds_cluster'
    """
    node: dict[str, Any] = {
        "id": options.node_id,
        # Envoy's file-based SDS refuses to start without a node cluster.
        "cluster": options.cluster or options.node_id,
        "metadata": {NAMESPACE_METADATA_KEY: options.namespace,
                     KIND_METADATA_KEY: ENVOY_NODE},
    }
    if options.zone:
        node["locality"] = {"zone": options.zone}
    if options.outbound_port is not None:
        node["metadata"][OUTBOUND_PORT_METADATA_KEY] = str(options.outbound_port)
    return {
        "node": node,
        "admin": {"address": _socket_address("127.0.0.1", options.admin_port)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if options.delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                "set_node_on_first_message_only": True,
            },
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": [_xds_cluster(options)]},
    }


def envoy_secret_files(options: EnvoyBootstrapOptions) -> dict[str, dict[str, Any]]:
    """The SDS files :func:`envoy_bootstrap` names, by path: each a ``DiscoveryResponse``
    holding one ``Secret`` whose data are file names (read, and watched, by Envoy).
    Empty without ``ca_root``."""
    files: dict[str, dict[str, Any]] = {}
    if options.ca_root:
        files[_secret_path(options, "roots")] = _sds_file(XDS_ROOTS_SECRET, {
            "validation_context": {
                "trusted_ca": {"filename": options.ca_root},
                "watched_directory": {"path": posixpath.dirname(options.ca_root) or "."},
            }})
    if options.cert_dir:
        files[_secret_path(options, "cert")] = _sds_file(XDS_CERT_SECRET, {
            "tls_certificate": {
                "certificate_chain": {"filename": posixpath.join(options.cert_dir, CERT_FILE)},
                "private_key": {"filename": posixpath.join(options.cert_dir, KEY_FILE)},
                "watched_directory": {"path": options.cert_dir},
            }})
    return files


def _xds_cluster(options: EnvoyBootstrapOptions) -> dict[str, Any]:
    host, _, port = options.xds_address.rpartition(":")
    host = host.strip("[]")
    cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {_HTTP_OPTIONS: {
            "@type": f"type.googleapis.com/{_HTTP_OPTIONS}",
            # Keepalive: a control plane gone without a FIN is noticed, and Envoy
            # reconnects (to another replica behind the name).
            "explicit_http_config": {"http2_protocol_options": {
                "connection_keepalive": {"interval": "30s", "timeout": "10s"}}},
        }},
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": _socket_address(host, int(port))}}]}],
        },
    }
    if options.ca_root:
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls",
                                       "typed_config": _upstream_tls(options)}
    return cluster


def _upstream_tls(options: EnvoyBootstrapOptions) -> dict[str, Any]:
    """TLS to the control plane: roots and (mTLS) the certificate from SDS files, the
    SAN checked here, where a rotation of the files cannot drop it."""
    name = options.xds_name
    san_type = "IP_ADDRESS" if _is_ip(name) else "DNS"
    common: dict[str, Any] = {
        "alpn_protocols": ["h2"],
        "combined_validation_context": {
            "default_validation_context": {"match_typed_subject_alt_names": [
                {"san_type": san_type, "matcher": {"exact": name}}]},
            "validation_context_sds_secret_config": _sds_config(
                XDS_ROOTS_SECRET, _secret_path(options, "roots")),
        },
    }
    if options.cert_dir:
        common["tls_certificate_sds_secret_configs"] = [
            _sds_config(XDS_CERT_SECRET, _secret_path(options, "cert"))]
    tls: dict[str, Any] = {"@type": _UPSTREAM_TLS, "common_tls_context": common}
    if san_type == "DNS":  # SNI is a host name, never an address (RFC 6066)
        tls["sni"] = name
    return tls


def _secret_path(options: EnvoyBootstrapOptions, which: str) -> str:
    return f"{options.secrets_prefix}-xds-{which}.json"


def _sds_config(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "sds_config": {"path_config_source": {"path": path},
                                         "resource_api_version": "V3"}}


def _sds_file(name: str, secret: dict[str, Any]) -> dict[str, Any]:
    return {"resources": [{"@type": _SECRET_TYPE, "name": name, **secret}]}


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
