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
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any

from meshlib.contract import (
    CA_FILE,
    CERT_FILE,
    DEFAULT_NAMESPACE,
    GRPC_NODE,
    KEY_FILE,
    KIND_METADATA_KEY,
    NAMESPACE_METADATA_KEY,
    SERVER_LISTENER_TEMPLATE,
    TLS_METADATA_KEY,
)
from xds_server.translate.security import CERT_PROVIDER_INSTANCE

__all__ = [
    "CA_FILE",
    "CERT_FILE",
    "CERT_REFRESH_INTERVAL",
    "KEY_FILE",
    "BootstrapOptions",
    "bootstrap_json",
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
    cert_dir: str = ""  # holds cert.pem, key.pem, ca.pem: enables mTLS ("" = plaintext)
    ca_root: str = ""  # the mesh root (PEM): TLS to the control plane ("" = plaintext)


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
                "channel_creds": [_channel_creds(options.ca_root)],
                "server_features": ["xds_v3"],
            }
        ],
        "node": node,
        "server_listener_resource_name_template": SERVER_LISTENER_TEMPLATE,
    }
    if options.cert_dir:
        node["metadata"][TLS_METADATA_KEY] = "true"
        bootstrap["certificate_providers"] = {
            CERT_PROVIDER_INSTANCE: _file_watcher(options.cert_dir)}
    return bootstrap


def _channel_creds(ca_root: str) -> dict[str, Any]:
    """How to reach the control plane: plaintext, or TLS verified against the mesh root
    (gRFC A65 ``tls`` credentials, which C-core gRPC reads; Node's grpc-js-xds 1.14
    accepts only ``insecure`` and ``google_default``)."""
    if not ca_root:
        return {"type": "insecure"}
    return {"type": "tls", "config": {"ca_certificate_file": ca_root}}


def _file_watcher(cert_dir: str) -> dict[str, Any]:
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
            "refresh_interval": CERT_REFRESH_INTERVAL,
        },
    }


def bootstrap_json(options: BootstrapOptions) -> str:
    """The bootstrap file text, indented JSON."""
    return json.dumps(make_bootstrap(options), indent=2) + "\n"
