"""The trust root pinned out of band (``ca_root`` / ``MESHLIB_CA_ROOT``): a certificate
reply that does not chain to it is refused, and it, not the reply, is what peers are
checked against."""

from __future__ import annotations

import pytest

from meshlib import CertificateError, MeshSettings
from meshlib.security._certificates import chains_to, read_roots
from meshlib.testing import MeshControlPlane


def test_a_mesh_pinned_to_the_real_root_gets_its_certificate(mesh_control_plane, tmp_path):
    root = tmp_path / "ca-root.pem"
    root.write_bytes(mesh_control_plane.ca.root_pem)
    mesh = mesh_control_plane.mesh("frontend", identity=True, ca_root=str(root))
    cert = mesh.certificates.current
    assert cert is not None and cert.roots_pem == mesh_control_plane.ca.root_pem
    assert chains_to(cert.chain_pem, root.read_bytes())


def test_a_ca_that_does_not_chain_to_the_pinned_root_is_refused(mesh_control_plane,
                                                                 tmp_path):
    """A man in the middle (or the wrong control plane) answers with its own CA: the
    Mesh refuses to start with it instead of trusting whatever root it sends."""
    with MeshControlPlane() as elsewhere:
        root = tmp_path / "ca-root.pem"
        root.write_bytes(elsewhere.ca.root_pem)
        with pytest.raises(CertificateError, match="does not chain to the pinned CA root"):
            mesh_control_plane.mesh("frontend", identity=True, ca_root=str(root))


def test_several_pinned_roots_allow_a_root_rotation(mesh_control_plane, tmp_path):
    with MeshControlPlane() as next_root:
        root = tmp_path / "ca-root.pem"
        root.write_bytes(next_root.ca.root_pem + mesh_control_plane.ca.root_pem)
        mesh = mesh_control_plane.mesh("frontend", identity=True, ca_root=str(root))
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
