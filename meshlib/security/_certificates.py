"""This workload's certificate: a local key, a CSR, an SVID — and keeping it fresh.

Two sources give the same :class:`WorkloadCertificate` stream:

* :class:`IssuedCertificates` asks the control plane's certificate service (a CSR
  plus a bearer token), then rotates at half the certificate's lifetime (±10 %
  jitter, so a fleet started together does not renew together), with a new key each
  time. A failed renewal is retried with backoff; the old certificate stays in use
  while it is valid.
* :class:`FileCertificates` reads ``cert.pem``/``key.pem``/``ca.pem`` mounted into
  the pod (cert-manager, SPIRE or Istio style) and re-reads them when they change.

Subscribers (server credentials, channel pools) are called on every new certificate;
they swap credentials for *new* connections, and calls in flight finish on the old.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshlib.contract import CA_FILE, CERT_FILE, KEY_FILE, CertificateError, MeshError, SpiffeId
from meshlib.contract.ca import (
    CREATE_CERTIFICATE,
    MAX_VALIDITY_DURATION,
    CertificateRequest,
    CertificateResponse,
)
from meshlib.contract.files import write_atomic
from meshlib.contract.x509 import spiffe_id_of

__all__ = [
    "CA_FILE",
    "CERT_FILE",
    "KEY_FILE",
    "CertificateError",
    "CertificateSource",
    "FileCertificates",
    "IssuedCertificates",
    "WorkloadCertificate",
    "chains_to",
    "make_key_and_csr",
    "read_roots",
    "request_certificate",
    "write_files",
]

log = logging.getLogger("meshlib.security")

ROTATE_AT = 0.5  # of the remaining lifetime
ROTATE_JITTER = 0.1
_RETRY_MIN, _RETRY_MAX = 0.5, 30.0
_REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadCertificate:
    """A private key, its certificate chain (leaf first), the trust roots, and facts
    about the leaf."""

    key_pem: bytes
    chain_pem: bytes
    roots_pem: bytes
    spiffe_id: SpiffeId
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def from_pem(cls, key_pem: bytes, chain_pem: bytes, roots_pem: bytes
                 ) -> WorkloadCertificate:
        """Check and describe PEM material; CertificateError if it is not an SVID."""
        try:
            certs = x509.load_pem_x509_certificates(chain_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
            x509.load_pem_x509_certificates(roots_pem)
        except ValueError as err:
            raise CertificateError(f"unreadable certificate material: {err}") from err
        leaf = certs[0]
        if key.public_key().public_numbers() != leaf.public_key().public_numbers():  # type: ignore[union-attr]
            raise CertificateError("the private key does not match the certificate")
        try:
            spiffe_id = spiffe_id_of(leaf)
        except ValueError as err:
            raise CertificateError(f"the certificate has no single SPIFFE ID: {err}") from err
        return cls(key_pem=key_pem, chain_pem=chain_pem, roots_pem=roots_pem,
                   spiffe_id=spiffe_id, serial=leaf.serial_number,
                   not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc)

    def expired(self, now: dt.datetime | None = None) -> bool:
        return (now or _now()) >= self.not_after

    def refresh_delay(self, now: dt.datetime | None = None, *,
                      rng: Callable[[], float] = random.random) -> float:
        """Seconds until this certificate should be replaced: half of what is left of
        its lifetime, jittered by ±10 %."""
        left = (self.not_after - (now or _now())).total_seconds()
        jitter = 1.0 + ROTATE_JITTER * (2.0 * rng() - 1.0)
        return max(0.0, left * ROTATE_AT * jitter)


def make_key_and_csr(spiffe_id: SpiffeId) -> tuple[bytes, bytes]:
    """A fresh ECDSA P-256 key (PKCS#8 PEM) and a CSR asking for ``spiffe_id``."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName(
               [x509.UniformResourceIdentifier(spiffe_id.uri)]), critical=True)
           .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            csr.public_bytes(serialization.Encoding.PEM))


def chains_to(chain_pem: bytes, roots_pem: bytes, *, now: dt.datetime | None = None) -> bool:
    """Whether the chain (leaf first) is signed, link by link, up to one of the roots,
    and every certificate in it is within its validity period."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
        roots = x509.load_pem_x509_certificates(roots_pem)
    except ValueError:
        return False
    moment = now or _now()
    for cert in chain:
        if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
            return False
    for child, parent in itertools.pairwise(chain):
        if not _issued_by(child, parent):
            return False
    last = chain[-1]
    return any(last == root or _issued_by(last, root) for root in roots)


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def read_roots(path: str | os.PathLike[str]) -> bytes:
    """The trust roots pinned in ``path`` (PEM; several for a root rotation);
    :class:`CertificateError` if unreadable or empty."""
    try:
        pem = Path(path).read_bytes()
    except OSError as err:
        raise CertificateError(f"cannot read the pinned CA root {path}: {err}") from err
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError as err:
        raise CertificateError(f"the pinned CA root {path} holds no PEM certificate") \
            from err
    return pem


async def request_certificate(address: str, spiffe_id: SpiffeId, token: str, *,
                              ttl: float | None = None,
                              timeout: float = _REQUEST_TIMEOUT,
                              roots_pem: bytes | None = None) -> WorkloadCertificate:
    """Ask the control plane at ``address`` to sign a new key for ``spiffe_id``.

    With ``roots_pem`` (the trust roots pinned out of band) the request goes over TLS
    to a control plane those roots vouch for (else nothing, not even the token, is
    sent), the reply must chain to one of them, and they, not what the reply says,
    become the certificate's roots. ``ttl``: seconds, 1 to
    :data:`~meshlib.contract.ca.MAX_VALIDITY_DURATION` (None: the mesh's certificate
    TTL). Raises :class:`CertificateError` with the service's status code on refusal,
    and without one for a ``ttl`` out of range.
    """
    if ttl is not None and not 1 <= ttl <= MAX_VALIDITY_DURATION:  # NaN fails both
        raise CertificateError(f"certificate TTL must be 1 to {MAX_VALIDITY_DURATION} "
                               f"seconds, got {ttl!r}")
    key_pem, csr_pem = make_key_and_csr(spiffe_id)
    request = CertificateRequest(csr=csr_pem.decode(), validity_duration=int(ttl or 0))
    channel = grpc.aio.insecure_channel(address) if roots_pem is None else \
        grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(roots_pem))
    async with channel:
        call = channel.unary_unary(CREATE_CERTIFICATE,
                                   request_serializer=CertificateRequest.SerializeToString,
                                   response_deserializer=CertificateResponse.FromString)
        try:
            response = await call(request, timeout=timeout,
                                  metadata=(("authorization", f"Bearer {token}"),))
        except grpc.aio.AioRpcError as err:
            details = err.details() or ""
            if roots_pem is not None and err.code() == grpc.StatusCode.UNAVAILABLE \
                    and "handshake" in details.lower():
                # Not an outage to wait out: the server is not one the root vouches for
                # (or speaks no TLS). The token was not sent.
                raise CertificateError(
                    f"the control plane at {address} failed TLS verification against the "
                    f"pinned CA root (ca_root); refused, the token was not sent: "
                    f"{details}") from err
            raise CertificateError(
                f"the control plane at {address} refused a certificate for {spiffe_id}: "
                f"{err.code().name}: {details}", code=err.code()) from err
    chain = list(response.cert_chain)
    if len(chain) < 2:
        raise CertificateError(f"the control plane at {address} sent no certificate chain")
    chain_pem = "".join(chain[:-1]).encode()
    if roots_pem is not None and not chains_to(chain_pem, roots_pem):
        raise CertificateError(
            f"the certificate the control plane at {address} sent does not chain to the "
            "pinned CA root (ca_root): refused (a man in the middle, or the wrong root)")
    issued = WorkloadCertificate.from_pem(
        key_pem, chain_pem, roots_pem if roots_pem is not None else chain[-1].encode())
    if issued.spiffe_id != spiffe_id:
        raise CertificateError(f"asked for {spiffe_id}, got a certificate for "
                               f"{issued.spiffe_id}")
    return issued


class CertificateSource:
    """The current certificate and who to tell when it changes (thread-safe)."""

    def __init__(self) -> None:
        self._current: WorkloadCertificate | None = None
        self._subscribers: list[Callable[[WorkloadCertificate], None]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.rotations = 0  # certificates installed after the first

    @property
    def current(self) -> WorkloadCertificate | None:
        return self._current

    def wait(self, timeout: float) -> WorkloadCertificate | None:
        """The certificate, waiting up to ``timeout`` seconds for the first one."""
        self._ready.wait(timeout)
        return self._current

    def subscribe(self, callback: Callable[[WorkloadCertificate], None]) -> None:
        """Call ``callback`` with every new certificate (now, if there is one)."""
        with self._lock:
            self._subscribers.append(callback)
            current = self._current
        if current is not None:
            callback(current)

    def _install(self, cert: WorkloadCertificate) -> None:
        with self._lock:
            if self._current is not None:
                self.rotations += 1
            self._current = cert
            subscribers = list(self._subscribers)
        self._ready.set()
        log.info("certificate for %s serial %x valid until %s", cert.spiffe_id, cert.serial,
                 cert.not_after.isoformat())
        for callback in subscribers:
            try:
                callback(cert)
            except Exception:
                log.exception("a certificate subscriber failed")

    async def run(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class IssuedCertificates(CertificateSource):
    """Certificates from the control plane's CA, rotated at half-life.

    ``token``/``token_file``: the bearer token (a file is re-read on every request,
    so a rotated projected token is picked up). ``ca_root``: a PEM file of the trust
    roots pinned out of band (re-read on every request); a reply that does not chain
    to them is refused.
    """

    def __init__(self, address: str, spiffe_id: SpiffeId, *, token: str | None = None,
                 token_file: str | os.PathLike[str] | None = None,
                 ttl: float | None = None,
                 ca_root: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        if (token is None) == (token_file is None):
            raise MeshError("give exactly one of token and token_file")
        self.address = address
        self.spiffe_id = spiffe_id
        self._token = token
        self._token_file = token_file
        self._ttl = ttl
        self._ca_root = ca_root  # re-read on every request: a root rotation is a file edit

    def _read_token(self) -> str:
        if self._token is not None:
            return self._token
        try:
            return Path(self._token_file).read_text().strip()  # type: ignore[arg-type]
        except OSError as err:
            raise CertificateError(f"cannot read the token file: {err}") from err

    async def fetch(self) -> WorkloadCertificate:
        """One request; installs and returns the new certificate."""
        roots = None if self._ca_root is None else read_roots(self._ca_root)
        cert = await request_certificate(self.address, self.spiffe_id, self._read_token(),
                                         ttl=self._ttl, roots_pem=roots)
        self._install(cert)
        return cert

    async def run(self) -> None:
        """Keep a valid certificate: fetch, sleep to the refresh time, repeat."""
        retry = _RETRY_MIN
        while True:
            current = self._current
            if current is not None:
                await asyncio.sleep(current.refresh_delay())
            try:
                await self.fetch()
                retry = _RETRY_MIN
            except CertificateError as err:
                current = self._current
                left = "none" if current is None else \
                    f"{(current.not_after - _now()).total_seconds():.0f}s left"
                level = logging.ERROR if current is None or current.expired() \
                    else logging.WARNING
                log.log(level, "certificate renewal failed (%s; retry in %.1fs): %s",
                        left, retry, err)
                await asyncio.sleep(retry)
                retry = min(retry * 2, _RETRY_MAX)


class FileCertificates(CertificateSource):
    """Certificates mounted as files in ``directory`` (``cert.pem`` — the chain, leaf
    first —, ``key.pem`` and ``ca.pem``), re-read when they change."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__()
        self.directory = Path(directory)

    def load(self) -> WorkloadCertificate:
        """Read the three files now (CertificateError if missing or inconsistent)."""
        d = self.directory
        try:
            material = [(d / name).read_bytes() for name in (KEY_FILE, CERT_FILE, CA_FILE)]
        except OSError as err:
            raise CertificateError(f"cannot read certificates in {d}: {err}") from err
        cert = WorkloadCertificate.from_pem(*material)
        current = self._current
        if current is None or current.serial != cert.serial:
            self._install(cert)
        return cert

    async def run(self) -> None:
        from watchfiles import awatch

        with contextlib.suppress(CertificateError):
            self.load()
        # Kubernetes updates mounted Secrets by swapping a symlink: watch the directory.
        async for _ in awatch(self.directory, debounce=200, step=50):
            try:
                self.load()
            except CertificateError as err:  # half-written: the next change completes it
                log.warning("ignoring certificate files in %s for now: %s", self.directory,
                            err)


def write_files(directory: str | os.PathLike[str], cert: WorkloadCertificate) -> None:
    """Write ``key.pem`` (mode 0600), ``cert.pem`` and ``ca.pem`` into ``directory``,
    each atomically, key first: a fresh temporary file (``mkstemp``: a name nobody could
    plant, never a symlink) gets its mode before its contents, then is renamed into
    place."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, data, mode in ((KEY_FILE, cert.key_pem, 0o600), (CERT_FILE, cert.chain_pem, 0o644),
                             (CA_FILE, cert.roots_pem, 0o644)):
        write_atomic(directory / name, data, mode=mode)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
