"""The mesh certificate authority (issue 4, part 1): CA key and certificate in a
:class:`CaStore`, SVIDs issued from CSRs by :class:`CertificateAuthority`.

The gRPC certificate service, request authentication and meshlib's rotating
credentials build on this (see the issue's note).
"""

from xds_server.ca._authority import (
    CA_TTL,
    DEFAULT_CERT_TTL,
    CertificateAuthority,
    CsrError,
    IssuedCertificate,
)
from xds_server.ca._store import CA_CERT_FILE, CA_KEY_FILE, CaStore, DirectoryCaStore

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CA_TTL",
    "DEFAULT_CERT_TTL",
    "CaStore",
    "CertificateAuthority",
    "CsrError",
    "DirectoryCaStore",
    "IssuedCertificate",
]
