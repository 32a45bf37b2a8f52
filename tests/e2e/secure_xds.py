"""A control plane whose xDS port requires a client certificate, and workload
certificates for it: shared by the native gRPC and Envoy tests of `meshctl bootstrap`.

STAND-IN until the control plane's authenticated xDS lands on main: `meshctl
control-plane --tls` with its serving credentials made to require a client certificate
(the CA shares that port, so certificates are issued here from the CA directory).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshlib.contract import SpiffeId
from meshlib.security import WorkloadCertificate, write_files
from meshlib.security._certificates import make_key_and_csr
from tests.e2e import conftest
from xds_server.ca import CA_CERT_FILE, CertificateAuthority, DirectoryCaStore

_REQUIRE_CLIENT_CERTS = """\
import sys
import xds_server.control_plane as cp
from xds_server.ca import ServingCertificates

def serving_credentials(options, ca):
    names = options.tls_names or ("meshlib-control-plane.meshlib-system.svc",
                                  "localhost", "127.0.0.1")
    return ServingCertificates(ca, names).credentials(require_client_auth=True)

cp.serving_credentials = serving_credentials
from meshctl.cli import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class SecureControlPlane:
    """A control plane (``cp``) whose xDS port requires client certificates; ``root``
    is its mesh root, as workloads pin it."""

    cp: conftest.ControlPlaneProc
    root: Path
    ca_dir: Path

    def issue(self, out_dir: Path, namespace: str = "default",
              service_account: str = "frontend") -> Path:
        """Write cert.pem, key.pem and ca.pem for ``namespace/service_account`` into
        ``out_dir`` (what `meshctl certs issue` writes)."""
        ca = CertificateAuthority.load_or_create(DirectoryCaStore(self.ca_dir))
        identity = SpiffeId(ca.trust_domain, namespace, service_account)
        key_pem, csr_pem = make_key_and_csr(identity)
        issued = ca.issue(csr_pem, identity)
        write_files(out_dir, WorkloadCertificate.from_pem(
            key_pem, issued.cert_pem + issued.chain_pem, ca.roots_pem()))
        return out_dir


def start_secure(config: Path, ca_dir: Path, control_plane_factory,
                 monkeypatch: pytest.MonkeyPatch) -> SecureControlPlane:
    """``config`` served by a control plane whose xDS port requires client certs."""
    with monkeypatch.context() as patch:
        patch.setattr(conftest, "MESHCTL", [sys.executable, "-c", _REQUIRE_CLIENT_CERTS])
        cp = control_plane_factory(config, extra_args=["--ca-dir", str(ca_dir), "--tls"])
    root = ca_dir.parent / f"{ca_dir.name}-root.pem"
    root.write_bytes((ca_dir / CA_CERT_FILE).read_bytes())  # distributed out of band
    return SecureControlPlane(cp, root, ca_dir)
