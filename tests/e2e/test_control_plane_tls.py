"""``meshctl control-plane`` secure (the default): ADS over mTLS and the CA over TLS on
a port of its own, with a serving certificate from the mesh CA; a meshlib workload
pinning the root (``ca_root``) and native gRPC with ``meshctl bootstrap --ca-root``
(gRFC A65 ``tls`` channel credentials) both use it, and neither talks to a control
plane the root does not vouch for. ADS streams are authenticated by the workload's
certificate: the namespace a node sees is its identity's, whatever it claims.

Native gRPC: ``meshctl bootstrap --ca-root --cert-dir`` makes the xDS channel mTLS with
the workload's certificate (A65 ``certificate_file`` / ``private_key_file``, which
grpcio 1.85 honours), re-read from the files."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

import meshlib
from meshlib import CertificateError
from tests.e2e.conftest import MESHCTL, ROOT, NativeClient
from tests.e2e.mesh_files import write_mesh
from tests.e2e.secure_xds import SecureControlPlane, foreign_certificate, start_secure
from xds_server.bootstrap import BootstrapOptions, bootstrap_json
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


# ------------------------------------------- native gRPC, xDS port requiring client certs

@pytest.fixture
def mtls_xds(tmp_path: Path, backends, control_plane_factory) -> SecureControlPlane:
    config = tmp_path / "mesh"
    write_mesh(config, {"reviews-v1": [backends("reviews-v1-a")]}, {"reviews-v1": 100})
    return start_secure(config, tmp_path / "secure", control_plane_factory)


def native_bootstrap(path: Path, xds: SecureControlPlane, address: str,
                     *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHCTL, "bootstrap", "--xds-address", address, "--node-id", path.stem,
         "--ca-root", str(xds.root), *extra, "--output", str(path)],
        check=True, capture_output=True, text=True, cwd=ROOT)


def native_calls(bootstrap: Path, n: int = 3, **cmd: object) -> dict:
    client = NativeClient(bootstrap, bootstrap.with_suffix(".log"))
    try:
        return client.send(op="calls", target=TARGET, n=n, **cmd)
    finally:
        client.close()


def test_native_grpc_routes_over_mtls_to_the_xds_port(mtls_xds, tmp_path):
    certs = mtls_xds.issue(tmp_path / "certs")
    bootstrap = tmp_path / "native-mtls.json"
    done = native_bootstrap(bootstrap, mtls_xds, mtls_xds.cp.xds_address,
                            "--cert-dir", str(certs))
    assert done.stderr == ""
    result = native_calls(bootstrap, n=5, wait_for_ready=True, timeout=10)
    assert result["counts"] == {"reviews-v1-a": 5}, result
    for xds_type in ("LDS", "RDS", "CDS", "EDS"):
        assert mtls_xds.cp.metric("meshlib_xds_acks_total", type=xds_type) >= 1, xds_type


def test_native_grpc_without_a_client_certificate_is_refused(mtls_xds, tmp_path):
    """TLS channel credentials that verify the control plane, but no certificate to
    prove who the node is: meshctl warns that the xDS port will refuse it, and it
    does: no ADS stream, no config, no call."""
    bootstrap = tmp_path / "native-anonymous.json"
    done = native_bootstrap(bootstrap, mtls_xds, mtls_xds.cp.xds_address)
    assert "warning: --ca-root without --cert-dir" in done.stderr
    assert "--cert-dir DIR" in done.stderr
    result = native_calls(bootstrap, timeout=2)
    assert result == {"counts": {}, "errors": {"UNAVAILABLE": 3}}, result
    assert mtls_xds.cp.metric("meshlib_xds_connected_clients") == 0


def test_native_grpc_refuses_an_impostor_control_plane(mtls_xds, tmp_path, backends,
                                                       control_plane_factory):
    """A control plane with its own CA (or in plaintext) on the address native gRPC was
    given: the pinned root refuses it, no ADS stream opens, and no call goes to the
    backends it would name."""
    certs = mtls_xds.issue(tmp_path / "certs")
    config = tmp_path / "impostor"
    write_mesh(config, {"reviews-v1": [backends("impostor")]}, {"reviews-v1": 100})
    impostors = {
        "own-ca": start_secure(config, tmp_path / "impostor-cp", control_plane_factory).cp,
        "plaintext": control_plane_factory(config),
    }
    for name, impostor in impostors.items():
        bootstrap = tmp_path / f"native-to-{name}.json"
        native_bootstrap(bootstrap, mtls_xds, impostor.xds_address, "--cert-dir", str(certs))
        result = native_calls(bootstrap, timeout=2)
        assert result == {"counts": {}, "errors": {"UNAVAILABLE": 3}}, (name, result)
        assert impostor.metric("meshlib_xds_connected_clients") == 0, name
        if name == "own-ca":
            assert "CERTIFICATE_VERIFY_FAILED" in bootstrap.with_suffix(".log").read_text()


def test_native_grpc_picks_up_a_rotated_client_certificate(mtls_xds, tmp_path):
    """The xDS channel's certificate is re-read from the files: a certificate the
    control plane refuses (another mesh's), replaced by a good one, and the next
    reconnection gets through, no restart (refresh_interval 1 s here, 10 s by default)."""
    certs = foreign_certificate(tmp_path / "certs", tmp_path / "other-ca")
    bootstrap = tmp_path / "native-rotated.json"
    bootstrap.write_text(bootstrap_json(BootstrapOptions(
        xds_address=mtls_xds.cp.xds_address, node_id="native-rotated",
        ca_root=str(mtls_xds.root), cert_dir=str(certs), refresh_interval="1s")))
    client = NativeClient(bootstrap, tmp_path / "native-rotated.log")
    try:
        refused = client.send(op="calls", target=TARGET, n=1, timeout=1)
        assert refused["errors"] == {"UNAVAILABLE": 1}, refused
        mtls_xds.issue(certs)  # rotation: atomic renames of key.pem, cert.pem, ca.pem
        started = time.monotonic()
        rotated = client.send(op="wait_for", target=TARGET, backend="reviews-v1-a",
                              timeout=15)
    finally:
        client.close()
    assert rotated["ok"], rotated
    assert time.monotonic() - started < 15
