"""The SPIFFE ID in an X.509 certificate or CSR: its URI subjectAltName.

The CA reads it from a CSR, meshlib from the certificate it was issued, the HTTP
middleware from a caller's certificate — one reading, with ``cryptography``
(https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md: an SVID carries
exactly one URI SAN, the SPIFFE ID).

This module imports ``cryptography``, so :mod:`meshlib.contract` does not re-export
it: import it by name where it is needed.

Example::

    csr = x509.load_pem_x509_csr(csr_pem)
    spiffe_id_of(csr)          # SpiffeId('cluster.local', 'default', 'frontend')
    spiffe_id_of_pem(cert_pem)  # 'spiffe://cluster.local/ns/default/sa/frontend'
"""

from __future__ import annotations

from cryptography import x509

from meshlib.contract.spiffe import SpiffeId

__all__ = ["spiffe_id_of", "spiffe_id_of_pem", "uri_sans"]

_Signed = x509.Certificate | x509.CertificateSigningRequest


def _subject_alt_name(signed: _Signed) -> x509.SubjectAlternativeName | None:
    try:
        return signed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def uri_sans(signed: _Signed) -> tuple[str, ...]:
    """Every URI SAN of a certificate or CSR (none without a subjectAltName)."""
    san = _subject_alt_name(signed)
    return () if san is None else tuple(san.get_values_for_type(x509.UniformResourceIdentifier))


def spiffe_id_of(signed: _Signed) -> SpiffeId:
    """The SPIFFE ID of a certificate or CSR: its one URI SAN.

    Raises ValueError saying what is wrong: no subjectAltName, not exactly one URI SAN,
    or a URI that is not a mesh SPIFFE ID.
    """
    san = _subject_alt_name(signed)
    if san is None:
        raise ValueError("no subjectAltName: put the SPIFFE ID in a URI SAN")
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise ValueError(f"expected exactly one SPIFFE ID URI SAN, got {len(uris)}")
    return SpiffeId.parse(uris[0])


def spiffe_id_of_pem(pem: str | bytes) -> str | None:
    """The one ``spiffe://`` URI SAN of a PEM certificate, as sent (None: not a
    certificate, or not exactly one such SAN). Other URI SANs are ignored, and the
    URI is not checked further: authorization rules match it as a string."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
        names = uri_sans(cert)
    except ValueError:
        return None
    spiffe = [n for n in names if n.startswith("spiffe://")]
    return spiffe[0] if len(spiffe) == 1 else None
