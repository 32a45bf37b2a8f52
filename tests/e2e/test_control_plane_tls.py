"""``meshctl control-plane`` secure (the default): ADS over mTLS and the CA over TLS on
a port of its own, with a serving certificate from the mesh CA; a meshlib workload
pinning the root (``ca_root``) and native gRPC with ``meshctl bootstrap --ca-root``
(gRFC A65 ``tls`` channel credentials) both use it, and neither talks to a control
plane the root does not vouch for. ADS streams are authenticated by the workload's
certificate: the namespace a node sees is its identity's, whatever it claims."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import meshlib
from meshlib import CertificateError
from tests.e2e.conftest import MESHCTL, ROOT, NativeClient
from tests.e2e.mesh_files import write_mesh
from xds_server.ca import CA_CERT_FILE

TARGET = "xds:///reviews.default.svc.cluster.local:50051"
TOKEN = "frontend-token-0123456789"


@pytest.fixture
def secure(tmp_path: Path, backends, control_plane_factory):
    config = tmp_path / "mesh"
    write_mesh(config, {"reviews-v1": [backends("reviews-v1-a")]}, {"reviews-v1": 100})
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(f"tokens:\n- serviceAccount: default/frontend\n  token: {TOKEN}\n")
    tokens.chmod(0o600)
    ca = tmp_path / "ca"
    cp = control_plane_factory(config, extra_args=[
        "--ca-dir", str(ca), "--token-file", str(tokens)], secure=True)
    root = tmp_path / "ca-root.pem"
    root.write_bytes((ca / CA_CERT_FILE).read_bytes())  # distributed out of band
    return cp, root


def test_a_pinned_meshlib_workload_gets_config_and_a_certificate_over_tls(secure):
    cp, root = secure
    with meshlib.Mesh(xds_address=cp.xds_address, ca_address=cp.ca_address,
                      service="frontend", token=TOKEN, ca_root=str(root)) as mesh:
        assert mesh.identity is not None and mesh.certificates.current is not None
        assert mesh.certificates.current.roots_pem == root.read_bytes()
        assert mesh.wait_ready("reviews", timeout=10)  # the config came over mTLS
    log = cp.log.read_text()
    assert "over mTLS" in log and "CA serving on" in log and "over TLS" in log


@pytest.mark.parametrize("pinned", [False, True])
def test_a_client_without_an_identity_gets_nothing(secure, pinned, caplog):
    """Plaintext, or TLS that verifies the control plane but has no certificate to
    show: the xDS port refuses both at the handshake."""
    cp, root = secure
    extra = {"ca_root": str(root)} if pinned else {}
    with meshlib.Mesh(xds_address=cp.xds_address, service="frontend",
                      resolve_timeout=2, **extra) as mesh:
        assert not mesh.wait_ready("reviews", timeout=2)
    if pinned:
        assert "ca_root without an identity" in caplog.text


def test_native_grpc_without_a_client_certificate_is_refused(secure, tmp_path):
    """TLS channel credentials that verify the control plane, but no certificate to
    prove who the node is: the xDS port refuses it, so no config and no call."""
    cp, root = secure
    bootstrap = tmp_path / "bootstrap.json"
    subprocess.run([*MESHCTL, "bootstrap", "--xds-address", cp.xds_address, "--node-id",
                    "native-tls", "--ca-root", str(root), "--output", str(bootstrap)],
                   check=True, cwd=ROOT)
    assert '"type": "tls"' in bootstrap.read_text()
    client = NativeClient(bootstrap, tmp_path / "native.log")
    try:
        result = client.send(op="calls", target=TARGET, n=2, wait_for_ready=True, timeout=2)
    finally:
        client.close()
    assert result["counts"] == {} and result["errors"], result


def test_an_impostor_control_plane_gets_no_token(secure, tmp_path, backends,
                                                control_plane_factory):
    """Another control plane (its own CA, TLS or not) on the address a workload was
    told: the workload's pinned root refuses it before the token is sent."""
    _, root = secure
    config = tmp_path / "impostor"
    write_mesh(config, {"reviews-v1": [backends("impostor")]}, {"reviews-v1": 100})
    for secure in (False, True):
        impostor = control_plane_factory(
            config, extra_args=["--ca-dir", str(tmp_path / f"ca-{secure}")], secure=secure)
        with pytest.raises(CertificateError, match="failed TLS verification"):
            meshlib.Mesh(xds_address=impostor.xds_address, ca_address=impostor.ca_address,
                         service="frontend", token=TOKEN, ca_root=str(root))


def test_secure_without_a_ca_is_a_usage_error(tmp_path):
    out = subprocess.run([*MESHCTL, "control-plane", "--config", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert "give --ca-dir DIR" in out.stderr and "--insecure" in out.stderr


def test_insecure_says_so(tmp_path, backends, control_plane_factory):
    config = tmp_path / "mesh"
    write_mesh(config, {"reviews-v1": [backends("reviews-v1-a")]})
    cp = control_plane_factory(config)  # --insecure
    assert "--insecure: xDS in plaintext, and any client may subscribe" in cp.log.read_text()


def test_certs_issue_over_tls_with_the_pinned_root(secure, tmp_path):
    cp, root = secure
    token = tmp_path / "token"
    token.write_text(TOKEN)
    out = tmp_path / "certs"
    done = subprocess.run([*MESHCTL, "certs", "issue", "--ca-address", cp.ca_address,
                           "--service-account", "frontend", "--token-file", str(token),
                           "--ca-root", str(root), "--out-dir", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert (out / "ca.pem").read_bytes() == root.read_bytes()  # the pinned root, kept


def test_certs_root_prints_the_root_workloads_pin(secure, tmp_path):
    _, root = secure
    ca_dir = root.parent / "ca"
    out = subprocess.run([*MESHCTL, "certs", "root", "--ca-dir", str(ca_dir)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.encode() == root.read_bytes()
    empty = tmp_path / "empty-ca"
    empty.mkdir(mode=0o700)
    missing = subprocess.run([*MESHCTL, "certs", "root", "--ca-dir", str(empty)],
                             capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 1 and "no CA there yet" in missing.stderr
