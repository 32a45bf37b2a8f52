"""Who is calling: the peer's SPIFFE ID from a server call's TLS auth context.

gRPC puts a verified client certificate's single SPIFFE URI SAN in the auth context
as ``peer_spiffe_id``; a plaintext caller has none.
"""

from __future__ import annotations

from typing import Any

from meshlib._spiffe import SpiffeId

__all__ = ["peer_identity", "peer_principal"]


def peer_principal(context: Any) -> str | None:
    """The caller's SPIFFE ID as sent (a string), or None for a plaintext peer.
    Works with sync and ``grpc.aio`` servicer contexts."""
    values = context.auth_context().get("peer_spiffe_id")
    return values[0].decode() if values else None


def peer_identity(context: Any) -> SpiffeId | None:
    """The caller's :class:`~meshlib.SpiffeId`, verified by the mTLS handshake; None
    for a plaintext caller or a certificate without a mesh SPIFFE ID.

    Example::

        def Get(self, request, context):
            caller = meshlib.peer_identity(context)   # SpiffeId(..., "frontend")
    """
    principal = peer_principal(context)
    if principal is None:
        return None
    try:
        return SpiffeId.parse(principal)
    except ValueError:
        return None
