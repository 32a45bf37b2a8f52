"""The certificate service: workloads send a CSR and a bearer token, get an SVID.

Served on the control plane's gRPC port beside ADS, speaking Istio's
``IstioCertificateService`` (see :mod:`meshlib.contract.ca`). The CA key
never leaves this process. Status codes a caller sees:

* ``UNAUTHENTICATED`` — no token, or a token nobody issued (no detail on which);
* ``PERMISSION_DENIED`` — the token does not cover the identity the CSR asks for;
* ``INVALID_ARGUMENT`` — the CSR is garbage, unsigned, not P-256, or has no SPIFFE ID,
  or ``validity_duration`` is negative or absurd (past :data:`MAX_VALIDITY_DURATION`);
* ``RESOURCE_EXHAUSTED`` — the identity got too many certificates lately
  (:class:`IssueLimit`: a burst of 10, then 1 per second, by default);
* ``FAILED_PRECONDITION`` — the control plane was started without a token file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable

import grpc
from cryptography import x509

from meshlib.contract import SpiffeId
from meshlib.contract.ca import (
    CREATE_CERTIFICATE,
    MAX_VALIDITY_DURATION,
    SERVICE_NAME,
    CertificateRequest,
    CertificateResponse,
)
from meshlib.contract.x509 import spiffe_id_of
from xds_server.ca._authority import CertificateAuthority, CsrError, parse_csr
from xds_server.ca._limits import IssueBuckets, IssueLimit
from xds_server.ca._tokens import (
    AuthenticationError,
    AuthenticatorUnavailable,
    Caller,
    TokenAuthenticator,
)

__all__ = ["MAX_VALIDITY_DURATION", "MIN_CERT_TTL", "CertificateService"]

log = logging.getLogger("xds_server.ca")

MIN_CERT_TTL = dt.timedelta(seconds=1)


class CertificateService:
    """Signs CSRs for authenticated workloads; add it to a ``grpc.aio`` server.

    ``ttl`` is the longest certificate it issues (MeshConfig ``certificateTTL``, read
    on each request so a config edit applies); a request may ask for less.
    ``issue_limit`` bounds how fast one identity gets certificates (None: no bound).
    """

    def __init__(self, ca: CertificateAuthority, authenticator: TokenAuthenticator | None, *,
                 ttl: Callable[[], dt.timedelta],
                 on_result: Callable[[str], None] | None = None,
                 issue_limit: IssueLimit | None = IssueLimit(),  # noqa: B008 - frozen
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ca = ca
        self._auth = authenticator
        self._ttl = ttl
        self._on_result = on_result or (lambda result: None)
        self._buckets = None if issue_limit is None else IssueBuckets(issue_limit, clock=clock)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            self._create_certificate,
            request_deserializer=CertificateRequest.FromString,
            response_serializer=CertificateResponse.SerializeToString)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE_NAME, {CREATE_CERTIFICATE.rsplit("/", 1)[1]: handler}),))

    async def _create_certificate(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        try:
            caller = await self._authenticate(context)
            return self._issue(request, context, caller)
        except AuthenticationError as err:
            self._refuse(context, "unauthenticated", str(err))
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(err))
        except AuthenticatorUnavailable as err:
            self._refuse(context, "unavailable", str(err))
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
        except _Refused as err:
            self._refuse(context, err.result, str(err))
            await context.abort(err.code, str(err))
        except Exception:  # a bug: never send Python's text to the caller
            log.exception("certificate request from %s failed", context.peer())
            self._on_result("error")
            await context.abort(grpc.StatusCode.INTERNAL, "the CA failed to issue the "
                                "certificate (see the control plane's log)")

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> Caller:
        """Who the caller is; an authenticator that asks another server (TokenReview)
        says ``blocking = True`` and runs in a thread, off the loop."""
        if self._auth is None:
            raise _Refused(grpc.StatusCode.FAILED_PRECONDITION, "no_authenticator",
                           "this control plane issues no certificates: start it with "
                           "--token-file (or in Kubernetes mode)")
        token = _bearer(context.invocation_metadata())
        if getattr(self._auth, "blocking", False):
            return await asyncio.to_thread(self._auth.authenticate, token)
        return self._auth.authenticate(token)

    def _issue(self, request, context: grpc.aio.ServicerContext, caller: Caller):  # type: ignore[no-untyped-def]
        requested = _validity(request.validity_duration)
        try:
            csr = parse_csr(request.csr.encode())
            identity = _requested_identity(csr, self._ca.trust_domain)
        except CsrError as err:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "bad_csr", str(err)) from err
        if not caller.permits(identity):
            raise _Refused(grpc.StatusCode.PERMISSION_DENIED, "not_permitted",
                           f"this token may not get a certificate for {identity}")
        wait = 0.0 if self._buckets is None else self._buckets.take(identity.uri)
        if wait:
            limit = self._buckets.limit  # type: ignore[union-attr]
            raise _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited",
                           f"too many certificates for {identity} (at most {limit.burst} at "
                           f"once, then {limit.per_second:g} per second): retry in "
                           f"{wait:.1f}s")
        ttl = self._ttl()
        if requested is not None:
            ttl = min(ttl, requested)
        ttl = max(ttl, MIN_CERT_TTL)
        try:
            issued = self._ca.issue(request.csr.encode(), identity, ttl=ttl)
        except CsrError as err:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "bad_csr", str(err)) from err
        log.info("issued %s serial %x until %s to %s", identity, issued.serial,
                 issued.not_after.isoformat(), context.peer())
        self._on_result("issued")
        chain = [issued.cert_pem.decode(), *_split_pem(issued.chain_pem)]
        return CertificateResponse(cert_chain=chain)

    def _refuse(self, context: grpc.aio.ServicerContext, result: str, why: str) -> None:
        log.warning("refused a certificate to %s: %s", context.peer(), why)
        self._on_result(result)


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, result: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.result = result


def _validity(seconds: object) -> dt.timedelta | None:
    """The TTL a request asks for (None: the mesh default); _Refused when absurd."""
    if not isinstance(seconds, int) or not 0 <= seconds <= MAX_VALIDITY_DURATION:
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "bad_request",
                       f"validity_duration must be 0 (the mesh default) or 1 to "
                       f"{MAX_VALIDITY_DURATION} seconds, got {seconds!r}")
    return dt.timedelta(seconds=seconds) if seconds else None


def _bearer(metadata) -> str:  # type: ignore[no-untyped-def]
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    raise AuthenticationError("missing 'authorization: Bearer <token>' metadata")


def _requested_identity(csr: x509.CertificateSigningRequest, trust_domain: str) -> SpiffeId:
    """The one SPIFFE ID the CSR's URI SANs ask for."""
    try:
        identity = spiffe_id_of(csr)
    except ValueError as err:
        raise CsrError(f"CSR: {err}") from err
    if identity.trust_domain != trust_domain:
        raise CsrError(f"{identity} is not in trust domain {trust_domain}")
    return identity


def _split_pem(pem: bytes) -> list[str]:
    marker = "-----END CERTIFICATE-----"
    parts = pem.decode().split(marker)
    return [p.strip() + "\n" + marker + "\n" for p in parts if p.strip()]
