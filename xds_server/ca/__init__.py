"""The mesh certificate authority: CA key and certificate in a :class:`CaStore`,
SVIDs issued from CSRs by :class:`CertificateAuthority`, served to workloads by the
gRPC :class:`CertificateService` for callers a :class:`TokenAuthenticator` vouches for.
"""

from xds_server.ca._authority import (
    CA_TTL,
    DEFAULT_CERT_TTL,
    CertificateAuthority,
    CsrError,
    IssuedCertificate,
    parse_csr,
)
from xds_server.ca._limits import (
    DEFAULT_ISSUE_BURST,
    DEFAULT_ISSUE_RATE,
    IssueBuckets,
    IssueLimit,
)
from xds_server.ca._service import MAX_VALIDITY_DURATION, MIN_CERT_TTL, CertificateService
from xds_server.ca._serving import DEFAULT_SERVING_NAMES, SERVING_TTL, ServingCertificates
from xds_server.ca._store import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CaAlreadyStored,
    CaStore,
    DirectoryCaStore,
)
from xds_server.ca._tokens import (
    AuthenticationError,
    AuthenticatorUnavailable,
    Caller,
    StaticTokens,
    TokenAuthenticator,
    hash_token,
)

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CA_TTL",
    "DEFAULT_CERT_TTL",
    "DEFAULT_ISSUE_BURST",
    "DEFAULT_ISSUE_RATE",
    "DEFAULT_SERVING_NAMES",
    "MAX_VALIDITY_DURATION",
    "MIN_CERT_TTL",
    "SERVING_TTL",
    "AuthenticationError",
    "AuthenticatorUnavailable",
    "CaAlreadyStored",
    "CaStore",
    "Caller",
    "CertificateAuthority",
    "CertificateService",
    "CsrError",
    "DirectoryCaStore",
    "IssueBuckets",
    "IssueLimit",
    "IssuedCertificate",
    "ServingCertificates",
    "StaticTokens",
    "TokenAuthenticator",
    "hash_token",
    "parse_csr",
]
