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
    Works with sync and ``grpc.aio`` servicer contexts.

    It reads the peer's identities (its certificate's SANs: 0.4 µs) rather than the
    whole auth context (which copies the PEM certificate: ~9 µs), and takes the one
    SPIFFE URI among them, as gRPC's ``peer_spiffe_id`` does.
    """
    identities = context.peer_identities()
    if not identities:
        return None
    found = None
    for value in identities:
        if value.startswith(b"spiffe://"):
            if found is not None:
                return None  # several SPIFFE IDs: none is the peer's
            found = value
    return found.decode() if found is not None else None


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
