"""The mesh CA: issues short-lived X.509 SVIDs from CSRs (pure; no network).

* The CA key is ECDSA P-256, created on first start and kept by a :class:`CaStore`
  (or loaded from it: a root or an intermediate, with its chain).
* :meth:`CertificateAuthority.issue` signs a workload's CSR for the identity the caller
  was *authenticated* as — the CSR's own subject and SANs are ignored, except that a
  CSR asking for a different SPIFFE ID is refused. The workload key must be ECDSA
  P-256 and the CSR's signature must verify (proof of possession).
* Certificates carry the SPIFFE ID as the only URI SAN (and its DNS form,
  :attr:`SpiffeId.dns_name`, as a DNS SAN for gRPC's hostname check), ``digitalSignature`` key
  usage, server and client auth, and end no later than the CA certificate.

Example::

    ca = CertificateAuthority.load_or_create(DirectoryCaStore("/var/lib/meshlib/ca"))
    issued = ca.issue(csr_pem, SpiffeId("cluster.local", "default", "frontend"))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshlib.contract import DEFAULT_TRUST_DOMAIN, MeshError, SpiffeId
from meshlib.contract.x509 import uri_sans
from xds_server.ca._store import CaAlreadyStored, CaStore

__all__ = [
    "CA_TTL",
    "DEFAULT_CERT_TTL",
    "CertificateAuthority",
    "CsrError",
    "IssuedCertificate",
    "parse_csr",
]

DEFAULT_CERT_TTL = dt.timedelta(hours=24)
CA_TTL = dt.timedelta(days=365)
_CLOCK_SKEW = dt.timedelta(minutes=1)  # backdate notBefore a little
_MAX_CSR_BYTES = 16 * 1024


class CsrError(MeshError):
    """A certificate request that cannot be honoured; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedCertificate:
    """A signed workload certificate, its chain up to the root, and its validity."""

    cert_pem: bytes
    chain_pem: bytes  # the CA certificate(s), issuer first
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    spiffe_id: SpiffeId


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateAuthority:
    """Signs workload certificates with the mesh CA key."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, *,
                 chain: tuple[x509.Certificate, ...] = (),
                 trust_domain: str = DEFAULT_TRUST_DOMAIN,
                 clock: Callable[[], dt.datetime] = _now) -> None:
        if key.public_key().public_numbers() != cert.public_key().public_numbers():
            raise MeshError("CA: the key does not match the CA certificate")
        self._key = key
        self.cert = cert
        self.chain = (cert, *chain)
        self.trust_domain = trust_domain
        self._clock = clock

    # ------------------------------------------------------------ construction

    @classmethod
    def create(cls, *, trust_domain: str = DEFAULT_TRUST_DOMAIN,
               clock: Callable[[], dt.datetime] = _now) -> CertificateAuthority:
        """A new self-signed root (ECDSA P-256, one year)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = clock()
        # Each root's name is its own (its key's id in it): during a root rotation a
        # workload trusts two roots, and TLS stacks pick the issuer by name.
        key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshlib"),
                          x509.NameAttribute(NameOID.COMMON_NAME,
                                             f"meshlib root CA ({trust_domain}) "
                                             f"{key_id[:4].hex()}")])
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _CLOCK_SKEW).not_valid_after(now + CA_TTL)
                .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, encipher_only=False,
                    decipher_only=False), critical=True)
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
                    critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        return cls(key, cert, trust_domain=trust_domain, clock=clock)

    @classmethod
    def load_or_create(cls, store: CaStore, *, trust_domain: str = DEFAULT_TRUST_DOMAIN,
                       clock: Callable[[], dt.datetime] = _now) -> CertificateAuthority:
        """The CA kept in ``store``; created (and saved) on first start."""
        found = store.load()
        if found is None:
            ca = cls.create(trust_domain=trust_domain, clock=clock)
            try:
                store.save(ca.key_pem(), ca.chain_pem())
                return ca
            except CaAlreadyStored:  # another replica won the race: use its CA
                found = store.load()
                if found is None:
                    raise
        key_pem, cert_pem = found
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
            certs = x509.load_pem_x509_certificates(cert_pem)
        except ValueError as err:
            raise MeshError(f"CA: cannot read the stored key or certificate: {err}") from err
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise MeshError("CA: the key must be an ECDSA key")
        basic = certs[0].extensions.get_extension_for_class(x509.BasicConstraints).value
        if not basic.ca:
            raise MeshError("CA: the stored certificate is not a CA certificate")
        return cls(key, certs[0], chain=tuple(certs[1:]), trust_domain=trust_domain,
                   clock=clock)

    def key_pem(self) -> bytes:
        """The CA key (PKCS#8 PEM) — for the store only; it never leaves the control
        plane."""
        return self._key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())

    def chain_pem(self) -> bytes:
        """The CA certificate and what it chains to, PEM, issuer first."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def roots_pem(self) -> bytes:
        """The trust anchor workloads verify peers against (the last of the chain)."""
        return self.chain[-1].public_bytes(serialization.Encoding.PEM)

    # ------------------------------------------------------------ issuing

    def issue(self, csr_pem: bytes, identity: SpiffeId, *,
              ttl: dt.timedelta = DEFAULT_CERT_TTL) -> IssuedCertificate:
        """Sign ``csr_pem`` for ``identity`` (who the caller was authenticated as).

        Raises :class:`CsrError` for a CSR that does not parse, whose signature does
        not verify, whose key is not ECDSA P-256, or that asks for another identity.
        """
        if identity.trust_domain != self.trust_domain:
            raise CsrError(f"identity {identity} is not in trust domain {self.trust_domain}")
        if ttl <= dt.timedelta(0):
            raise CsrError(f"certificate TTL must be positive, got {ttl}")
        csr = parse_csr(csr_pem)
        _check_requested_identity(csr, identity)
        now = self._clock()
        not_after = min(now + ttl, self.cert.not_valid_after_utc)
        serial = x509.random_serial_number()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, identity.trust_domain)]))
                .issuer_name(self.cert.subject)
                .public_key(csr.public_key())
                .serial_number(serial)
                .not_valid_before(now - _CLOCK_SKEW).not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                               critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_encipherment=False, key_cert_sign=False,
                    crl_sign=False, content_commitment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False),
                    critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(identity.uri),
                     x509.DNSName(identity.dns_name)]), critical=True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self._key.public_key()), critical=False)
                .sign(self._key, hashes.SHA256()))
        return IssuedCertificate(cert_pem=cert.public_bytes(serialization.Encoding.PEM),
                                 chain_pem=self.chain_pem(), serial=serial,
                                 not_before=cert.not_valid_before_utc,
                                 not_after=cert.not_valid_after_utc, spiffe_id=identity)


    def issue_serving(self, public_key: ec.EllipticCurvePublicKey,
                      names: Sequence[x509.GeneralName], *,
                      ttl: dt.timedelta) -> x509.Certificate:
        """A TLS serving certificate for ``names`` (DNS names, IP addresses) — the
        control plane's own, for its xDS + CA port — valid ``ttl`` at most."""
        now = self._clock()
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshlib"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "meshlib control plane")]))
                .issuer_name(self.cert.subject)
                .public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _CLOCK_SKEW)
                .not_valid_after(min(now + ttl, self.cert.not_valid_after_utc))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
                .sign(self._key, hashes.SHA256()))


def parse_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """A size-checked CSR whose signature verifies and whose key is ECDSA P-256."""
    if not csr_pem or len(csr_pem) > _MAX_CSR_BYTES:
        raise CsrError(f"CSR must be 1 to {_MAX_CSR_BYTES} bytes of PEM, got {len(csr_pem)}")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as err:
        raise CsrError(f"CSR is not a PEM certificate request: {err}") from err
    try:
        valid = csr.is_signature_valid
    except (ValueError, InvalidSignature):
        valid = False
    if not valid:
        raise CsrError("CSR signature does not verify (no proof of key possession)")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise CsrError("CSR key must be ECDSA P-256")
    return csr


def _check_requested_identity(csr: x509.CertificateSigningRequest,
                              identity: SpiffeId) -> None:
    for uri in uri_sans(csr):
        if uri != identity.uri:
            raise CsrError(f"CSR asks for {uri}, but the caller is {identity.uri}: a "
                           "workload can only get a certificate for its own identity")
