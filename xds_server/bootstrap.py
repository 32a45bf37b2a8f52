"""The gRPC xDS bootstrap file, for native gRPC clients and servers in any language.

gRPC reads it from the file named by ``GRPC_XDS_BOOTSTRAP`` (or the JSON itself in
``GRPC_XDS_BOOTSTRAP_CONFIG``) the first time an ``xds:///`` channel or an xDS server
is created. Format: https://github.com/grpc/proposal/blob/master/A27-xds-global-load-balancing.md
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from xds_server.node import KIND_METADATA_KEY, NAMESPACE_METADATA_KEY
from xds_server.translate.names import SERVER_LISTENER_TEMPLATE

__all__ = ["BootstrapOptions", "bootstrap_json", "make_bootstrap"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BootstrapOptions:
    """What goes into a bootstrap: where the control plane is and who the node is."""

    xds_address: str
    node_id: str
    namespace: str = "default"
    cluster: str = ""
    zone: str = ""
    kind: str = "grpc"


def make_bootstrap(options: BootstrapOptions) -> dict[str, Any]:
    """The bootstrap as a dict (see :func:`bootstrap_json` for the file text).

    Example::

        >>> b = make_bootstrap(BootstrapOptions(xds_address="127.0.0.1:15010", node_id="a"))
        >>> b["xds_servers"][0]["server_uri"]
        '127.0.0.1:15010'
    """
    node: dict[str, Any] = {
        "id": options.node_id,
        "metadata": {
            NAMESPACE_METADATA_KEY: options.namespace,
            KIND_METADATA_KEY: options.kind,
        },
    }
    if options.cluster:
        node["cluster"] = options.cluster
    if options.zone:
        node["locality"] = {"zone": options.zone}
    return {
        "xds_servers": [
            {
                "server_uri": options.xds_address,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": node,
        "server_listener_resource_name_template": SERVER_LISTENER_TEMPLATE,
    }


def bootstrap_json(options: BootstrapOptions) -> str:
    """The bootstrap file text, indented JSON."""
    return json.dumps(make_bootstrap(options), indent=2) + "\n"
