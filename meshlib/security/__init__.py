"""Security: workload identity and certificates, peer identity, authorization."""

from meshlib.security._authz import AuthorizationPolicy, Decision, decode_rbac_filters
from meshlib.security._peer import peer_identity, peer_principal

__all__ = [
    "AuthorizationPolicy",
    "Decision",
    "decode_rbac_filters",
    "peer_identity",
    "peer_principal",
]
