"""The SPIFFE ID of a certificate or CSR, read one way for the CA, meshlib and HTTP."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshlib.contract import SpiffeId
from meshlib.contract.x509 import spiffe_id_of, spiffe_id_of_pem, uri_sans

FRONTEND = SpiffeId("cluster.local", "default", "frontend")
_KEY = ec.generate_private_key(ec.SECP256R1())


def _csr(*names: x509.GeneralName) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)),
                                        critical=True)
    return builder.sign(_KEY, hashes.SHA256())


def _cert(*names: x509.GeneralName) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(_KEY.public_key()).serial_number(1)
               .not_valid_before(now).not_valid_after(now + dt.timedelta(hours=1)))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)),
                                        critical=True)
    return builder.sign(_KEY, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


URI = x509.UniformResourceIdentifier
DNS = x509.DNSName(FRONTEND.dns_name)


@pytest.mark.parametrize("make", [_csr, _cert])
def test_the_one_uri_san_is_the_spiffe_id(make):
    signed = make(URI(FRONTEND.uri), DNS)
    assert spiffe_id_of(signed) == FRONTEND
    assert uri_sans(signed) == (FRONTEND.uri,)


@pytest.mark.parametrize(("names", "error"), [
    ((), "no subjectAltName"),
    ((DNS,), "exactly one SPIFFE ID URI SAN, got 0"),
    ((URI(FRONTEND.uri), URI("spiffe://cluster.local/ns/x/sa/y")), "got 2"),
    ((URI("https://example.org/frontend"),), "not a SPIFFE ID"),
])
@pytest.mark.parametrize("make", [_csr, _cert])
def test_anything_else_is_a_value_error_saying_why(make, names, error):
    with pytest.raises(ValueError, match=error):
        spiffe_id_of(make(*names))


def test_uri_sans_without_a_san_extension_is_empty():
    assert uri_sans(_csr()) == ()


def test_spiffe_id_of_pem_takes_the_one_spiffe_uri_as_sent():
    other = "spiffe://example.org/workload/batch"  # not the mesh's form: kept as sent
    assert spiffe_id_of_pem(_pem(_cert(URI(other), URI("https://x.example")))) == other
    assert spiffe_id_of_pem(_pem(_cert(URI(FRONTEND.uri))).decode()) == FRONTEND.uri
    assert spiffe_id_of_pem(_pem(_cert(URI(FRONTEND.uri), URI(other)))) is None
    assert spiffe_id_of_pem(_pem(_cert(DNS))) is None
    assert spiffe_id_of_pem(_pem(_cert())) is None
    assert spiffe_id_of_pem(b"not a certificate") is None
