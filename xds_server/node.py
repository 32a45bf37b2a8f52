"""Who is asking: classify an xDS ``Node`` into the group whose snapshot it gets.

Resources differ by node *kind* (gRPC clients get ``api_listener`` Listeners, Envoy
gets socket listeners) and by namespace (short names like ``reviews`` resolve in the
caller's namespace, as Kubernetes DNS does). Every node of one group gets the same
snapshot, so the control plane translates once per group, not once per node.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2

from meshlib.contract import (
    DEFAULT_NAMESPACE,
    ENVOY_NODE,
    GRPC_NODE,
    KIND_METADATA_KEY,
    MESHLIB_NODE,
    NAMESPACE_METADATA_KEY,
    OUTBOUND_PORT_METADATA_KEY,
    TLS_METADATA_KEY,
    NodeKind,
)

__all__ = [
    "KIND_METADATA_KEY",
    "NAMESPACE_METADATA_KEY",
    "OUTBOUND_PORT_METADATA_KEY",
    "TLS_METADATA_KEY",
    "NodeGroup",
    "NodeKind",
    "group_of",
]

# The node metadata keys (written by `meshctl bootstrap`, `meshctl sidecar` and
# meshlib) and the node kinds are meshlib.contract.node's, re-exported here.
_TLS_KINDS = (MESHLIB_NODE,)  # kinds whose nodes always do mTLS


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeGroup:
    """The key of a snapshot: node kind, namespace, (Envoy) outbound port, and whether
    the nodes can do mTLS (``tls``: their Clusters and server Listeners carry TLS
    contexts naming the ``meshlib`` certificate provider).

    :func:`group_of` sets ``tls`` for meshlib nodes always (meshlib brings its own
    certificates), for gRPC nodes when their bootstrap says so, and never for Envoy
    (no TLS contexts for Envoy yet).
    """

    kind: NodeKind
    namespace: str = DEFAULT_NAMESPACE
    outbound_port: int | None = None
    tls: bool = False

    @property
    def key(self) -> str:
        """``kind/namespace[/outbound port]``, then ``/tls`` (or, for meshlib, whose
        nodes always do mTLS, ``/plaintext``) when ``tls`` is not the kind's usual."""
        key = f"{self.kind}/{self.namespace}"
        if self.outbound_port is not None:
            key += f"/{self.outbound_port}"
        if self.tls != (self.kind in _TLS_KINDS):
            key += "/tls" if self.tls else "/plaintext"
        return key

    def __str__(self) -> str:
        return self.key


def group_of(node: base_pb2.Node) -> NodeGroup:
    """The group of ``node``.

    Envoy identifies itself by ``user_agent_name == "envoy"``; meshlib by metadata
    ``MESHLIB_KIND: meshlib``; everything else is a proxyless gRPC client or server.
    The namespace comes from metadata ``NAMESPACE`` (Istio's key), default ``default``.
    meshlib nodes are in ``tls`` groups; a gRPC node is when its metadata
    ``MESHLIB_TLS`` is ``"true"`` (or JSON ``true``).
    """
    fields = node.metadata.fields

    def text(key: str) -> str:
        return fields[key].string_value if key in fields else ""

    namespace = text(NAMESPACE_METADATA_KEY) or DEFAULT_NAMESPACE
    declared = text(KIND_METADATA_KEY)
    if node.user_agent_name == "envoy" or declared == ENVOY_NODE:
        port = None
        if OUTBOUND_PORT_METADATA_KEY in fields:
            value = fields[OUTBOUND_PORT_METADATA_KEY]
            raw = value.string_value or (int(value.number_value) if value.number_value else "")
            port = int(raw) if str(raw).isdigit() else None
        return NodeGroup(kind=ENVOY_NODE, namespace=namespace, outbound_port=port)
    if declared == MESHLIB_NODE:
        return NodeGroup(kind=MESHLIB_NODE, namespace=namespace, tls=True)
    tls = TLS_METADATA_KEY in fields and (
        fields[TLS_METADATA_KEY].bool_value
        or fields[TLS_METADATA_KEY].string_value.lower() == "true")
    return NodeGroup(kind=GRPC_NODE, namespace=namespace, tls=tls)
