"""Security: workload identity and certificates, peer identity, authorization.

* Workload certificates — :class:`IssuedCertificates` (from the control plane's CA,
  renewed at half-life: :func:`request_certificate`) and :class:`FileCertificates`
  (mounted files, followed), both :class:`CertificateSource`\\ s of
  :class:`WorkloadCertificate`\\ s;
* who is calling — :func:`peer_identity` / :func:`peer_principal`, the SPIFFE ID the
  mTLS handshake verified, and :func:`peer_address`, its address (the real one behind
  a PERMISSIVE front: :data:`FORWARDED`);
* authorization — :class:`AuthorizationPolicy` (the server Listener's RBAC filters,
  compiled), and :class:`Admission` (authorization, then the local rate limit per
  caller) that ``mesh.server()``'s handler guard (:func:`guard_handler`,
  :func:`rewrap_handler`) and the ASGI/WSGI middleware both ask.

Names are imported on first use (:mod:`meshlib._lazy`).
"""

from typing import TYPE_CHECKING

from meshlib._lazy import lazy_exports

if TYPE_CHECKING:
    from meshlib.security._admission import DENIED, Admission, Refusal, log_denial
    from meshlib.security._authz import AuthorizationPolicy, Decision, decode_rbac_filters
    from meshlib.security._certificates import (
        CA_FILE,
        CERT_FILE,
        KEY_FILE,
        CertificateSource,
        FileCertificates,
        IssuedCertificates,
        WorkloadCertificate,
        make_key_and_csr,
        read_roots,
        request_certificate,
        write_files,
    )
    from meshlib.security._guard import (
        Check,
        PolicySource,
        authorization_check,
        authorize_generic,
        authorize_methods,
        guard_handler,
    )
    from meshlib.security._handlers import (
        HANDLER_FACTORIES,
        Wrap,
        rewrap_generic,
        rewrap_handler,
    )
    from meshlib.security._peer import FORWARDED, peer_address, peer_identity, peer_principal

__all__ = [
    "CA_FILE",
    "CERT_FILE",
    "DENIED",
    "FORWARDED",
    "HANDLER_FACTORIES",
    "KEY_FILE",
    "Admission",
    "AuthorizationPolicy",
    "CertificateSource",
    "Check",
    "Decision",
    "FileCertificates",
    "IssuedCertificates",
    "PolicySource",
    "Refusal",
    "WorkloadCertificate",
    "Wrap",
    "authorization_check",
    "authorize_generic",
    "authorize_methods",
    "decode_rbac_filters",
    "guard_handler",
    "log_denial",
    "make_key_and_csr",
    "peer_address",
    "peer_identity",
    "peer_principal",
    "read_roots",
    "request_certificate",
    "rewrap_generic",
    "rewrap_handler",
    "write_files",
]
__getattr__, __dir__ = lazy_exports(__name__, __file__)
