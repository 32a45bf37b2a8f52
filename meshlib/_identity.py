"""A Mesh's workload identity: its SPIFFE ID and the certificates that prove it.

With ``token``/``token_file`` the Mesh generates its key, gets a certificate from the
control plane's CA at start and renews it at half its lifetime; with ``cert_dir`` it
reads mounted files and follows changes; with neither it has no identity and speaks
plaintext. Each new certificate is handed to the subscribers (the client channel
pools, which retire their secure channels); servers read the current one on each
handshake.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc

from meshlib._loop import BackgroundLoop
from meshlib._settings import MeshSettings
from meshlib.contract import SpiffeId
from meshlib.errors import CertificateError, MeshError
from meshlib.security import (
    CertificateSource,
    FileCertificates,
    IssuedCertificates,
    WorkloadCertificate,
)

__all__ = ["Identity"]

log = logging.getLogger("meshlib")


class Identity:
    """Who this Mesh is, once :meth:`start` ran: :attr:`spiffe_id` and the
    :attr:`certificates` source (both None without an identity)."""

    def __init__(self) -> None:
        self.spiffe_id: SpiffeId | None = None
        self.certificates: CertificateSource | None = None
        self.first_certificate_seconds: float | None = None  # time to the first cert

    def start(self, settings: MeshSettings, loop: BackgroundLoop,
              on_certificate: Callable[[WorkloadCertificate], None]) -> None:
        """Obtain the first certificate (a CA that refuses raises
        :class:`~meshlib.CertificateError` now; one that is unreachable is retried in
        the background) and keep it renewed on ``loop``."""
        started = time.monotonic()
        source: CertificateSource
        if settings.cert_dir is not None:
            files = FileCertificates(settings.cert_dir)
            files.load()  # CertificateError now, not later, if they are missing
            source = files
        else:
            account = settings.service_account or settings.service
            if not account:
                raise MeshError("a Mesh with a token needs service= or service_account= "
                                "(its identity is spiffe://<td>/ns/<namespace>/sa/<sa>)")
            identity = SpiffeId(settings.trust_domain, settings.namespace, account)
            issued = IssuedCertificates(settings.certificate_address, identity,
                                        token=settings.token, token_file=settings.token_file,
                                        ttl=settings.cert_ttl, ca_root=settings.ca_root)
            source = issued
            try:
                loop.submit(issued.fetch).result(timeout=settings.resolve_timeout + 1)
            except CertificateError as err:
                # RESOURCE_EXHAUSTED: the CA's per-identity rate limit (many replicas
                # of one service account starting at once): wait, as for a CA away.
                if err.code not in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.DEADLINE_EXCEEDED,
                                    grpc.StatusCode.RESOURCE_EXHAUSTED):
                    raise  # refused: a configuration problem, say so now
                log.warning("no certificate yet (%s); retrying in the background. Until "
                            "one comes, calls to mTLS destinations raise CertificateError "
                            "(never plaintext)", err)
        self.certificates = source
        self.spiffe_id = source.current.spiffe_id if source.current is not None \
            else source.spiffe_id  # type: ignore[attr-defined]
        if source.current is not None:
            self.first_certificate_seconds = time.monotonic() - started
        source.subscribe(on_certificate)
        loop.spawn(source.run)
