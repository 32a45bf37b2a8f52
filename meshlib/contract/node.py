"""Who a node is: the ``Node`` metadata keys and node kinds the control plane reads.

meshlib's xDS client, ``meshctl bootstrap`` and ``meshctl sidecar`` write them; the
control plane groups nodes by them (each group gets one snapshot):

* :data:`KIND_METADATA_KEY` (``MESHLIB_KIND``): the node kind, one of
  :data:`NODE_KINDS`. Envoy is also recognised by ``user_agent_name == "envoy"``;
  anything else is a proxyless gRPC node.
* :data:`NAMESPACE_METADATA_KEY` (``NAMESPACE``, Istio's key): where short names
  resolve; :data:`~meshlib.contract.defaults.DEFAULT_NAMESPACE` when absent.
* :data:`TLS_METADATA_KEY` (``MESHLIB_TLS``): ``"true"`` (or JSON ``true``) when a
  gRPC node's bootstrap declares the ``meshlib`` certificate provider, so its
  resources may name it (gRPC NACKs an unknown certificate provider instance).
  meshlib nodes always do mTLS.
* :data:`OUTBOUND_PORT_METADATA_KEY` (``OUTBOUND_PORT``): an Envoy sidecar's outbound
  listener port.
* :data:`PEER_IDENTITY_METADATA_KEY` (``MESHLIB_PEER_IDENTITY``): written by the
  control plane, never trusted from a client: the SPIFFE ID the node's mTLS ADS stream
  proved. On an authenticated stream the control plane also overwrites ``NAMESPACE``
  with that identity's namespace, so what a node claims in its metadata changes nothing.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "ENVOY_NODE",
    "GRPC_NODE",
    "KIND_METADATA_KEY",
    "MESHLIB_NODE",
    "NAMESPACE_METADATA_KEY",
    "NODE_KINDS",
    "OUTBOUND_PORT_METADATA_KEY",
    "PEER_IDENTITY_METADATA_KEY",
    "TLS_METADATA_KEY",
    "NodeKind",
]

KIND_METADATA_KEY = "MESHLIB_KIND"
NAMESPACE_METADATA_KEY = "NAMESPACE"
TLS_METADATA_KEY = "MESHLIB_TLS"
OUTBOUND_PORT_METADATA_KEY = "OUTBOUND_PORT"
PEER_IDENTITY_METADATA_KEY = "MESHLIB_PEER_IDENTITY"

#: What a node is: a proxyless gRPC client or server, an Envoy sidecar, or meshlib.
NodeKind = Literal["grpc", "envoy", "meshlib"]
GRPC_NODE: NodeKind = "grpc"
ENVOY_NODE: NodeKind = "envoy"
MESHLIB_NODE: NodeKind = "meshlib"
NODE_KINDS: tuple[NodeKind, ...] = (GRPC_NODE, ENVOY_NODE, MESHLIB_NODE)
