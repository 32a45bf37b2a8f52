"""Who is calling: the peer's SPIFFE ID from a server call's TLS auth context.

The caller's identity is the one SPIFFE URI SAN of the client certificate the mTLS
handshake verified (what gRPC also reports as ``peer_spiffe_id`` in the auth context);
a plaintext caller, or a certificate without exactly one SPIFFE ID, has none.

Example::

    def Get(self, request, context):
        caller = meshlib.peer_identity(context)   # SpiffeId(..., "frontend") or None
"""

from __future__ import annotations

from typing import Any

from meshlib.contract import SpiffeId

__all__ = ["peer_identity", "peer_principal"]

_SAN = "x509_subject_alternative_name"


def peer_principal(context: Any) -> str | None:
    """The caller's SPIFFE ID as sent (a string), or None for a plaintext peer.
    Works with sync and ``grpc.aio`` servicer contexts.

    It reads the peer's identities (its verified certificate's SANs: ~1 µs in all)
    rather than the whole auth context (which copies the PEM certificate: ~5 µs), and
    takes the one SPIFFE URI among them, like gRPC's ``peer_spiffe_id``; a certificate
    with several SPIFFE IDs has none.
    """
    identities = context.peer_identities()
    if not identities or context.peer_identity_key() != _SAN:
        return None  # plaintext, or a certificate without SANs (its CN is no identity)
    found = None
    for value in identities:
        if value.startswith(b"spiffe://"):
            if found is not None:
                return None  # several SPIFFE IDs: none is the peer's
            found = value
    return found.decode("ascii", "replace") if found is not None else None


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
