"""The trust root pinned out of band (``ca_root`` / ``MESHLIB_CA_ROOT``): the Mesh talks
to the control plane over TLS only if the root vouches for it (no token is sent
otherwise), a certificate reply must chain to the root, and the pinned roots, not the
reply, are what peers are checked against."""

from __future__ import annotations

import datetime as dt

import pytest

from meshlib import CertificateError, MeshSettings
from meshlib.security import read_roots
from meshlib.security._certificates import chains_to, make_key_and_csr
from meshlib.testing import MeshControlPlane
from meshlib.testing import config as c

GET = "/demo.Reviews/Get"


@pytest.fixture
def secure_control_plane():
    with MeshControlPlane(tls=True) as cp:
        yield cp


def test_over_tls_with_the_pinned_root_everything_works(secure_control_plane):
    cp = secure_control_plane
    cp.apply(c.service("reviews"),
             c.access_policy("reviews", c.allow(service_accounts=["default/frontend"]),
                             mode="STRICT"))
    from meshlib.testing import MeshServices

    MeshServices(cp)("reviews", {GET: lambda request, context: b"ok"}, identity=True)
    mesh = cp.mesh("frontend", identity=True)  # pins cp.ca.root_file
    assert mesh.settings.ca_root == str(cp.ca.root_file)
    cert = mesh.certificates.current
    assert cert is not None and cert.roots_pem == cp.ca.root_pem
    assert mesh.channel("reviews").unary_unary(GET)(b"", timeout=5) == b"ok"


@pytest.mark.parametrize("other_tls", [True, False], ids=["another-CA", "plaintext"])
def test_a_control_plane_the_root_does_not_vouch_for_gets_no_token(secure_control_plane,
                                                                   other_tls):
    """A man in the middle with its own CA, or one that offers plaintext: the Mesh
    refuses to start, and its token never reaches it."""
    with MeshControlPlane(tls=other_tls) as impostor:
        with pytest.raises(CertificateError, match="failed TLS verification against the "
                                                   "pinned CA root"):
            impostor.mesh("frontend", identity=True,
                          ca_root=str(secure_control_plane.ca.root_file))
        assert impostor.ca.requests == 0  # no request (no token) reached it


def test_a_reply_that_does_not_chain_to_the_root_is_refused(tmp_path):
    from meshlib.contract import SpiffeId
    from xds_server.ca import CertificateAuthority

    ours, theirs = CertificateAuthority.create(), CertificateAuthority.create()
    identity = SpiffeId("cluster.local", "default", "frontend")
    _, csr = make_key_and_csr(identity)
    issued = theirs.issue(csr, identity)
    assert chains_to(issued.cert_pem, theirs.roots_pem())
    assert not chains_to(issued.cert_pem, ours.roots_pem())
    assert chains_to(issued.cert_pem, ours.roots_pem() + theirs.roots_pem())  # rotation
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    assert not chains_to(issued.cert_pem, theirs.roots_pem(), now=later)  # expired


def test_several_pinned_roots_allow_a_root_rotation(secure_control_plane, tmp_path):
    with MeshControlPlane() as next_root:
        root = tmp_path / "ca-root.pem"
        root.write_bytes(next_root.ca.root_pem + secure_control_plane.ca.root_pem)
        mesh = secure_control_plane.mesh("frontend", identity=True, ca_root=str(root))
        assert mesh.certificates.current.roots_pem == root.read_bytes()


def test_an_unreadable_pinned_root_is_a_clear_error(tmp_path):
    with pytest.raises(CertificateError, match="cannot read the pinned CA root"):
        read_roots(tmp_path / "missing.pem")
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    with pytest.raises(CertificateError, match="no PEM certificate"):
        read_roots(tmp_path / "empty.pem")


def test_the_root_comes_from_the_environment_too():
    settings = MeshSettings.from_env({"MESHLIB_XDS_ADDRESS": "cp:15010",
                                      "MESHLIB_CA_ROOT": "/etc/meshlib/ca-root.pem"})
    assert settings.ca_root == "/etc/meshlib/ca-root.pem"


def test_the_mesh_s_xds_stream_is_authenticated_by_its_certificate(secure_control_plane):
    """With the root pinned and an identity, the Mesh's ADS stream runs over mTLS: the
    control plane knows the node as its identity, in its identity's namespace."""
    cp = secure_control_plane
    cp.apply(c.service("reviews", namespace="shop"))
    mesh = cp.mesh("frontend", namespace="shop")  # an identity: the default with tls
    assert mesh.wait_ready("reviews", timeout=10)
    ads = cp._server.ads
    streams = cp._loop.submit(lambda: list(ads.registry.streams())).result(timeout=5)
    assert [(s.group, s.node.metadata.fields["MESHLIB_PEER_IDENTITY"].string_value)
            for s in streams] == [("meshlib/shop", str(mesh.identity))]


def test_a_mesh_without_an_identity_is_refused_by_the_xds_port(secure_control_plane,
                                                               caplog):
    cp = secure_control_plane
    cp.apply(c.service("reviews"))
    mesh = cp.mesh("frontend", identity=False, resolve_timeout=1)
    assert not mesh.wait_ready("reviews", timeout=1)
    assert "ca_root without an identity" in caplog.text
