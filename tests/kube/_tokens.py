"""Service-account tokens as the API server mints them (TokenRequest, projected
volumes) and judges them (TokenReview): JWTs with the ``kubernetes.io`` claims.

Signed with HS256 and a key of this fake (a real server uses RS256 and its
service-account signing key); nothing but this fake verifies them. The claims are
those of a real bound token, so code that peeks into a token sees what it would see.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["ISSUER", "TokenAuthority", "TokenError"]

ISSUER = "https://kubernetes.default.svc.cluster.local"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenError(Exception):
    """Why a token does not authenticate (the text TokenReview reports)."""


@dataclass(frozen=True)
class Claims:
    namespace: str
    service_account: str
    service_account_uid: str
    audiences: tuple[str, ...]
    expires: int
    pod: tuple[str, str] | None  # (name, uid)
    jti: str

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


class TokenAuthority:
    """Mints and verifies service-account JWTs."""

    def __init__(self, issuer: str = ISSUER) -> None:
        self.issuer = issuer
        self._key = secrets.token_bytes(32)
        self._kid = _b64(hashlib.sha256(self._key).digest()[:12])

    def mint(self, *, namespace: str, service_account: str, service_account_uid: str,
             audiences: list[str] | tuple[str, ...], expires_in: float,
             pod: tuple[str, str] | None = None, now: float | None = None) -> tuple[str, int]:
        """A signed token and its expiry (Unix seconds)."""
        iat = int(time.time() if now is None else now)
        exp = int(iat + expires_in)
        ident: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": service_account, "uid": service_account_uid},
        }
        if pod:
            ident["pod"] = {"name": pod[0], "uid": pod[1]}
        claims = {"aud": list(audiences), "exp": exp, "iat": iat, "iss": self.issuer,
                  "jti": str(uuid.uuid4()), "kubernetes.io": ident, "nbf": iat,
                  "sub": f"system:serviceaccount:{namespace}:{service_account}"}
        header = {"alg": "HS256", "kid": self._kid, "typ": "JWT"}
        signing_input = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + _b64(json.dumps(claims, separators=(",", ":")).encode()))
        sig = hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(sig)}", exp

    def verify(self, token: str, audiences: list[str] | tuple[str, ...]) -> Claims:
        """The claims of a token this authority signed, unexpired, for one of
        ``audiences``; else :class:`TokenError` with the real server's wording."""
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("invalid bearer token")
        try:
            expected = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(),
                                hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(parts[2])):
                raise TokenError("invalid bearer token, square/go-jose: error in "
                                 "cryptographic primitive")
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, UnicodeDecodeError) as exc:
            raise TokenError("invalid bearer token") from exc
        if claims.get("iss") != self.issuer:
            raise TokenError("invalid bearer token")
        if claims["exp"] <= time.time():
            raise TokenError("invalid bearer token, service account token has expired")
        aud = claims.get("aud") or []
        if not set(aud) & set(audiences):
            raise TokenError(f"invalid bearer token, token audiences {json.dumps(aud)} is "
                             f"invalid for the target audiences {json.dumps(list(audiences))}")
        ident = claims["kubernetes.io"]
        pod = ident.get("pod")
        return Claims(namespace=ident["namespace"],
                      service_account=ident["serviceaccount"]["name"],
                      service_account_uid=ident["serviceaccount"]["uid"],
                      audiences=tuple(a for a in aud if a in audiences),
                      expires=claims["exp"], pod=(pod["name"], pod["uid"]) if pod else None,
                      jti=claims["jti"])
