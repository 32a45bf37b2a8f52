"""The control plane's serving certificate: issued by the mesh CA for the names clients
dial, re-issued at half-life, and followed by every server that uses it (the xDS port
and the CA port each get the new one on their next handshake)."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from cryptography import x509

from meshlib.contract.x509 import uri_sans
from xds_server.ca import CertificateAuthority, ServingCertificates


@pytest.fixture
def serving() -> ServingCertificates:
    return ServingCertificates(CertificateAuthority.create(), ["cp.mesh.svc", "127.0.0.1"])


def _leaf(serving: ServingCertificates) -> x509.Certificate:
    return x509.load_pem_x509_certificates(serving.chain_pem)[0]


def test_it_names_what_clients_dial_and_no_workload(serving):
    san = _leaf(serving).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["cp.mesh.svc"]
    assert [str(a) for a in san.value.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert uri_sans(_leaf(serving)) == ()  # no SPIFFE ID: it cannot pass for a workload
    usage = _leaf(serving).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]


def test_every_server_follows_a_rotation(serving):
    xds, ca = [serving._generation], [serving._generation]  # what two servers have
    assert serving.fetch(xds) is None and serving.fetch(ca) is None  # nothing new yet
    before = serving.chain_pem
    serving._refresh_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)  # half-life
    assert isinstance(serving.fetch(xds), grpc.ServerCertificateConfiguration)
    assert serving.chain_pem != before
    # The other server was not the one that asked first: it still gets the new one.
    assert isinstance(serving.fetch(ca), grpc.ServerCertificateConfiguration)
    assert serving.fetch(xds) is None and serving.fetch(ca) is None


def test_without_names_it_refuses():
    with pytest.raises(ValueError, match="at least one DNS name or IP"):
        ServingCertificates(CertificateAuthority.create(), [])
