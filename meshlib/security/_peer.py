"""Who is calling: the peer's SPIFFE ID from a server call's TLS auth context, and
its network address.

The caller's identity is the one SPIFFE URI SAN of the client certificate the mTLS
handshake verified (what gRPC also reports as ``peer_spiffe_id`` in the auth context);
a plaintext caller, or a certificate without exactly one SPIFFE ID, has none.

The caller's address is ``context.peer()`` unless the connection came through a
PERMISSIVE front (``meshlib._server_bind.Front``): gRPC then sees the front's loopback
hop, and :func:`peer_address` maps it back through :data:`FORWARDED`, which the front
keeps (one entry per forwarded connection, while it is open).

Example::

    def Get(self, request, context):
        caller = meshlib.peer_identity(context)   # SpiffeId(..., "frontend") or None
        where = meshlib.peer_address(context)     # "ipv4:10.0.3.7:41234"
"""

from __future__ import annotations

from typing import Any

from meshlib.contract import SpiffeId, one_spiffe_uri

__all__ = ["FORWARDED", "peer_address", "peer_identity", "peer_principal", "source_of"]

_SAN = "x509_subject_alternative_name"

#: The callers of the connections PERMISSIVE fronts forward, by the address gRPC
#: reports for the forwarded hop (``ipv4:127.0.0.1:<the hop's source port>``), in
#: gRPC's own peer format (``ipv4:10.0.3.7:41234``, ``ipv6:%5B2001:db8::7%5D:41234``).
#: Written by the fronts on their event loop; read without a lock (one dict lookup).
FORWARDED: dict[str, str] = {}


def peer_address(context: Any) -> str:
    """The caller's address as gRPC writes it (``ipv4:10.0.3.7:41234``): what
    ``context.peer()`` says, or — for a connection a PERMISSIVE front forwarded over
    loopback — the address of the real caller the front accepted. Works with sync and
    ``grpc.aio`` servicer contexts; one dict lookup on top of ``context.peer()``.

    Example::

        def Get(self, request, context):
            log.info("asked by %s", meshlib.peer_address(context))
    """
    peer = context.peer()
    return FORWARDED.get(peer, peer)


def source_of(context: Any) -> str:
    """The caller's host without its port (``ipv4:10.0.3.7``): the key under which
    callers without an identity share a rate-limit bucket."""
    return peer_address(context).rpartition(":")[0]


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
    return one_spiffe_uri(identities)


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
