"""The control plane's own serving certificate, for TLS on its xDS + CA port.

Issued by the mesh CA for the names clients dial (DNS names such as
``meshlib-control-plane.meshlib-system.svc``, and IP addresses), short-lived and
re-issued at half its lifetime: gRPC asks :meth:`ServingCertificates.fetch` on each
new handshake, so a rotation needs no restart. Workloads verify it against the mesh
root they were given out of band (``Mesh(ca_root=...)``, ``meshctl bootstrap
--ca-root``), so a man in the middle with another CA is refused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
from collections.abc import Sequence

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from xds_server.ca._authority import CertificateAuthority

__all__ = ["DEFAULT_SERVING_NAMES", "SERVING_TTL", "ServingCertificates"]

#: What a serving certificate is issued for unless told: the in-cluster Service name
#: of the control plane (deploy/), localhost and the loopback addresses.
DEFAULT_SERVING_NAMES = ("meshlib-control-plane.meshlib-system.svc", "localhost",
                         "127.0.0.1", "::1")
SERVING_TTL = dt.timedelta(hours=24)


class ServingCertificates:
    """The control plane's serving certificate for ``names``, kept fresh.

    Example::

        serving = ServingCertificates(ca, ["cp.mesh.svc", "10.0.0.7"])
        server.add_secure_port("0.0.0.0:15012", serving.credentials())
    """

    def __init__(self, ca: CertificateAuthority, names: Sequence[str], *,
                 ttl: dt.timedelta = SERVING_TTL) -> None:
        if not names:
            raise ValueError("a serving certificate needs at least one DNS name or IP")
        self._ca = ca
        self.names = tuple(dict.fromkeys(names))
        self._ttl = ttl
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every re-issue; each credentials() follows it
        self._issue()

    def _issue(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._ca.issue_serving(key.public_key(),
                                      [_general_name(n) for n in self.names], ttl=self._ttl)
        now = dt.datetime.now(dt.UTC)
        self.key_pem = key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
        self.chain_pem = cert.public_bytes(serialization.Encoding.PEM) + self._ca.chain_pem()
        self.not_after = cert.not_valid_after_utc
        self._refresh_at = now + (self.not_after - now) / 2
        self._generation += 1

    def fetch(self, seen: list[int] | None = None) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration once the current one is past half its life (or newer
        than the generation in ``seen``, which is updated), else None: gRPC keeps the
        one it has. Called by gRPC on new handshakes."""
        with self._lock:
            due = dt.datetime.now(dt.UTC) >= self._refresh_at
            if due:
                self._issue()
            if seen is None:
                return self._configuration() if due else None
            if seen[0] == self._generation:
                return None
            seen[0] = self._generation
            return self._configuration()

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        # The CA's roots as of this issue: a root rotation (a new CA key) re-issues the
        # serving certificate too, so both move together.
        return grpc.ssl_server_certificate_configuration([(self.key_pem, self.chain_pem)],
                                                         root_certificates=self._ca.roots_pem())

    def credentials(self, *, require_client_auth: bool = False) -> grpc.ServerCredentials:
        """Server credentials that rotate the certificate.

        ``require_client_auth``: the client must present a certificate that chains to
        the mesh roots (the xDS port: a workload's ADS stream is authenticated by its
        certificate). Without it no client certificate is asked for (the CA port:
        workloads authenticate with their token). gRPC Python cannot ask for an
        optional client certificate, hence two ports, as Linkerd has (identity and
        destination)."""
        seen = [self._generation]  # each server (xDS port, CA port) follows on its own
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), lambda: self.fetch(seen),
            require_client_authentication=require_client_auth)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return x509.DNSName(name)
