"""Security: workload identity and certificates, peer identity, authorization.

* :class:`WorkloadCertificate` — a key, its SVID chain and the trust roots;
  :func:`request_certificate` asks the control plane's CA for one and
  :func:`write_files` writes it as ``key.pem``/``cert.pem``/``ca.pem`` (what
  ``meshctl certs issue`` does for workloads that do not run meshlib);
* :func:`peer_identity` / :func:`peer_principal` — who is calling a server;
* :class:`AuthorizationPolicy` — the RBAC rules a server enforces.
"""

from meshlib.security._authz import AuthorizationPolicy, Decision, decode_rbac_filters
from meshlib.security._certificates import WorkloadCertificate, request_certificate, write_files
from meshlib.security._peer import peer_identity, peer_principal

__all__ = [
    "AuthorizationPolicy",
    "Decision",
    "WorkloadCertificate",
    "decode_rbac_filters",
    "peer_identity",
    "peer_principal",
    "request_certificate",
    "write_files",
]
