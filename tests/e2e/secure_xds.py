"""A control plane in its default secure mode (its xDS port requires a client
certificate from the mesh; the CA on a port of its own), and workload certificates for
it, as an operator gets them: shared by the native gRPC and Envoy tests of `meshctl
bootstrap`."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from meshlib.contract import SpiffeId
from meshlib.security import WorkloadCertificate, make_key_and_csr, write_files
from tests.e2e.conftest import MESHCTL, ROOT, ControlPlaneProc
from xds_server.ca import CA_CERT_FILE, CertificateAuthority, DirectoryCaStore

TOKEN = "frontend-token-0123456789"


@dataclass
class SecureControlPlane:
    """A secure control plane (``cp``); ``root`` is its mesh root as workloads pin it,
    ``token_file`` a bootstrap token for ``default/frontend``."""

    cp: ControlPlaneProc
    root: Path
    token_file: Path

    def issue(self, out_dir: Path) -> Path:
        """``meshctl certs issue`` for ``default/frontend`` into ``out_dir``: cert.pem,
        key.pem, ca.pem from the CA over TLS, verified against the pinned root."""
        done = subprocess.run(
            [*MESHCTL, "certs", "issue", "--ca-address", self.cp.ca_address,
             "--service-account", "frontend", "--token-file", str(self.token_file),
             "--ca-root", str(self.root), "--out-dir", str(out_dir)],
            capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        return out_dir


def start_secure(config: Path, workdir: Path, control_plane_factory) -> SecureControlPlane:
    """``config`` served by a secure control plane whose CA lives in ``workdir``."""
    workdir.mkdir(mode=0o700, exist_ok=True)
    tokens = workdir / "tokens.yaml"
    tokens.write_text(f"tokens:\n- serviceAccount: default/frontend\n  token: {TOKEN}\n")
    tokens.chmod(0o600)
    ca = workdir / "ca"
    cp = control_plane_factory(config, extra_args=[
        "--ca-dir", str(ca), "--token-file", str(tokens)], secure=True)
    root = workdir / "ca-root.pem"
    root.write_bytes((ca / CA_CERT_FILE).read_bytes())  # distributed out of band
    token_file = workdir / "token"
    token_file.write_text(TOKEN)
    return SecureControlPlane(cp, root, token_file)


def foreign_certificate(out_dir: Path, ca_dir: Path) -> Path:
    """A certificate for ``default/frontend`` from another mesh's CA (made in
    ``ca_dir``): well formed, and refused by any control plane of ours."""
    ca_dir.mkdir(mode=0o700, exist_ok=True)
    ca = CertificateAuthority.load_or_create(DirectoryCaStore(ca_dir))
    identity = SpiffeId(ca.trust_domain, "default", "frontend")
    key_pem, csr_pem = make_key_and_csr(identity)
    issued = ca.issue(csr_pem, identity)
    write_files(out_dir, WorkloadCertificate.from_pem(
        key_pem, issued.cert_pem + issued.chain_pem, ca.roots_pem()))
    return out_dir
