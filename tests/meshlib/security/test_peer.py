"""peer_principal / peer_identity from what gRPC reports about a call's peer (the real
TLS path runs in tests/interceptors/test_authz_interceptor.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from meshlib import SpiffeId
from meshlib.security import peer_identity, peer_principal

SAN = "x509_subject_alternative_name"
FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"


@dataclass
class Context:
    """The two ServicerContext methods the functions read."""

    identities: list[bytes] | None
    key: str | None = SAN

    def peer_identities(self) -> list[bytes] | None:
        return self.identities

    def peer_identity_key(self) -> str | None:
        return self.key


@pytest.mark.parametrize(("context", "principal"), [
    (Context(None, None), None),  # plaintext
    (Context([FRONTEND.encode(), b"frontend.default.serviceaccount.identity.cluster.local"]),
     FRONTEND),
    (Context([b"reviews.example.com"]), None),  # a certificate without a SPIFFE ID
    (Context([FRONTEND.encode(), b"spiffe://cluster.local/ns/x/sa/y"]), None),  # two
    (Context([FRONTEND.encode()], key="x509_common_name"), None),  # a CN is no identity
    (Context([b"spiffe://other.example/workload"]), "spiffe://other.example/workload"),
])
def test_peer_principal(context, principal):
    assert peer_principal(context) == principal


def test_peer_identity_parses_mesh_ids_only():
    assert peer_identity(Context([FRONTEND.encode()])) == SpiffeId(
        "cluster.local", "default", "frontend")
    assert peer_identity(Context([b"spiffe://other.example/workload"])) is None
    assert peer_identity(Context(None, None)) is None
