"""The mesh CA: SVIDs from CSRs, identity checks, persistence (issue 4, part 1)."""

from __future__ import annotations

import datetime as dt
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshlib.contract import ConfigError, SpiffeId
from xds_server.ca import (
    CA_KEY_FILE,
    CertificateAuthority,
    CsrError,
    DirectoryCaStore,
)

FRONTEND = SpiffeId("cluster.local", "default", "frontend")


def csr(key=None, uri: str | None = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if uri is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def test_issues_a_short_lived_spiffe_svid_chained_to_the_root():
    clock = Clock()
    ca = CertificateAuthority.create(clock=clock)
    issued = ca.issue(csr(), FRONTEND)
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    root = x509.load_pem_x509_certificate(ca.roots_pem())
    cert.verify_directly_issued_by(root)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/default/sa/frontend"]
    assert issued.not_after - clock.now == dt.timedelta(hours=24)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert issued.serial == cert.serial_number
    assert ca.issue(csr(), FRONTEND).serial != issued.serial


def test_ttl_is_configurable_and_capped_by_the_ca():
    clock = Clock()
    ca = CertificateAuthority.create(clock=clock)
    assert ca.issue(csr(), FRONTEND, ttl=dt.timedelta(minutes=5)).not_after == (
        clock.now + dt.timedelta(minutes=5))
    capped = ca.issue(csr(), FRONTEND, ttl=dt.timedelta(days=3650))
    assert capped.not_after == ca.cert.not_valid_after_utc


def test_a_csr_for_another_identity_is_refused():
    ca = CertificateAuthority.create()
    with pytest.raises(CsrError, match="own identity"):
        ca.issue(csr(uri="spiffe://cluster.local/ns/default/sa/admin"), FRONTEND)
    ca.issue(csr(uri=FRONTEND.uri), FRONTEND)  # asking for itself is fine
    with pytest.raises(CsrError, match="trust domain"):
        ca.issue(csr(), SpiffeId("other.example", "default", "frontend"))


@pytest.mark.parametrize("garbage", [b"", b"not a csr", b"-----BEGIN CERTIFICATE REQUEST-----\n"
                                     b"AAAA\n-----END CERTIFICATE REQUEST-----\n", b"x" * 20000])
def test_garbage_csrs_get_clear_errors(garbage):
    with pytest.raises(CsrError):
        CertificateAuthority.create().issue(garbage, FRONTEND)


def test_only_ecdsa_p256_keys():
    ca = CertificateAuthority.create()
    with pytest.raises(CsrError, match="P-256"):
        ca.issue(csr(ec.generate_private_key(ec.SECP384R1())), FRONTEND)
    with pytest.raises(CsrError, match="P-256"):
        ca.issue(csr(rsa.generate_private_key(public_exponent=65537, key_size=2048)), FRONTEND)


def test_the_ca_is_created_once_and_kept_on_disk(tmp_path):
    store = DirectoryCaStore(tmp_path / "ca")
    first = CertificateAuthority.load_or_create(store)
    again = CertificateAuthority.load_or_create(store)
    assert again.cert == first.cert and again.key_pem() == first.key_pem()
    assert stat.S_IMODE((tmp_path / "ca" / CA_KEY_FILE).stat().st_mode) == 0o600
    issued = again.issue(csr(), FRONTEND)
    x509.load_pem_x509_certificate(issued.cert_pem).verify_directly_issued_by(first.cert)


def test_half_a_stored_ca_is_an_error(tmp_path):
    store = DirectoryCaStore(tmp_path)
    CertificateAuthority.load_or_create(store)
    (tmp_path / CA_KEY_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=CA_KEY_FILE):
        CertificateAuthority.load_or_create(store)


# ---------------------------------------------------------------- store permissions


def test_a_new_ca_directory_is_private(tmp_path):
    CertificateAuthority.load_or_create(DirectoryCaStore(tmp_path / "new" / "ca"))
    assert stat.S_IMODE((tmp_path / "new" / "ca").stat().st_mode) == 0o700


@pytest.mark.parametrize(("target", "mode", "fix"), [
    ("", 0o777, "chmod 700"),           # the directory, world-writable
    ("", 0o770, "chmod 700"),           # group-writable
    (CA_KEY_FILE, 0o666, "chmod 600"),  # the key, writable by others
    (CA_KEY_FILE, 0o640, "chmod 600"),  # the key, readable by the group
    ("ca-cert.pem", 0o646, "chmod 644"),
])
def test_a_ca_others_may_write_is_refused(tmp_path, target, mode, fix):
    store = DirectoryCaStore(tmp_path / "ca")
    CertificateAuthority.load_or_create(store)
    path = tmp_path / "ca" / target if target else tmp_path / "ca"
    path.chmod(mode)
    with pytest.raises(ConfigError) as err:
        CertificateAuthority.load_or_create(store)
    assert str(path) in str(err.value) and f"{fix} {path}" in str(err.value)


def test_an_empty_world_writable_directory_gets_no_ca(tmp_path):
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca").chmod(0o777)
    with pytest.raises(ConfigError, match="chmod 700"):
        CertificateAuthority.load_or_create(DirectoryCaStore(tmp_path / "ca"))
    assert not (tmp_path / "ca" / CA_KEY_FILE).exists()


@pytest.mark.parametrize("target", ["", CA_KEY_FILE])
def test_a_ca_owned_by_another_user_is_refused(tmp_path, target):
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    store = DirectoryCaStore(tmp_path / "ca")
    CertificateAuthority.load_or_create(store)
    path = tmp_path / "ca" / target if target else tmp_path / "ca"
    os.chown(path, 12345, -1)
    with pytest.raises(ConfigError, match=f"owned by uid 12345.*chown {os.geteuid()} {path}"):
        CertificateAuthority.load_or_create(store)
