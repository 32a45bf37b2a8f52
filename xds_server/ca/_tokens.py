"""Who is asking for a certificate: bearer tokens → the identities they may hold.

File mode (no Kubernetes) uses bootstrap tokens from a YAML file given to
``meshctl control-plane --token-file``::

    tokens:
      - serviceAccount: default/frontend        # namespace/service-account
        sha256: 9f86d081884c7d65...             # hex SHA-256 of the token (preferred)
      - serviceAccount: shop/*                  # any service account in namespace shop
        token: s3cret-for-dev-only              # or the token itself

A token authenticates the caller *as* the service accounts it names; the CA then
signs only a certificate for one of those. The file is re-read when it changes (a
``stat`` per request), so removing a token revokes it without a restart; a new file
that is invalid is logged and the previous tokens stay. Tokens are compared in constant time and
never logged. Kubernetes mode swaps in a TokenReview authenticator (the Kubernetes
issue) behind the same :class:`TokenAuthenticator` protocol.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import yaml

from meshlib.contract import ConfigError, MeshError, SpiffeId

__all__ = [
    "AuthenticationError",
    "AuthenticatorUnavailable",
    "Caller",
    "StaticTokens",
    "TokenAuthenticator",
    "hash_token",
]

log = logging.getLogger("xds_server.ca")

# Kubernetes projected tokens are ~1 KiB; gRPC itself starts refusing metadata
# past 8 KiB in total (RESOURCE_EXHAUSTED), so anything bigger is not a token.
_MAX_TOKEN_BYTES = 4 * 1024
# namespace/service-account, each a DNS label as in a SPIFFE ID, "*" a wildcard
_LABEL = r"[a-z0-9*]([-a-z0-9*]{0,61}[a-z0-9*])?"
_SERVICE_ACCOUNT = re.compile(rf"{_LABEL}/{_LABEL}")


class AuthenticationError(MeshError):
    """A missing, malformed or unknown token. The message is safe to return."""


class AuthenticatorUnavailable(MeshError):
    """The token could not be checked now (the API server is away): try again."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: the ``namespace/service-account`` patterns it may
    get certificates for (``*`` wildcards, as in ``shop/*``)."""

    service_accounts: tuple[str, ...]

    def permits(self, identity: SpiffeId) -> bool:
        name = f"{identity.namespace}/{identity.service_account}"
        return any(fnmatch.fnmatchcase(name, p) for p in self.service_accounts)


class TokenAuthenticator(Protocol):
    """Turns a bearer token into a :class:`Caller`, or raises AuthenticationError."""

    def authenticate(self, token: str) -> Caller: ...


def hash_token(token: str) -> str:
    """The hex SHA-256 of ``token``: what a token file should keep."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    service_account: str


class StaticTokens:
    """Bootstrap tokens from a file (or given directly), each bound to service accounts.

    Example::

        auth = StaticTokens.from_file("/etc/meshlib/tokens.yaml")
        caller = auth.authenticate(token)        # AuthenticationError if unknown
    """

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        """``entries``: (token SHA-256 hex, ``namespace/service-account`` pattern)."""
        self._entries = tuple(_Entry(bytes.fromhex(d), sa) for d, sa in entries)
        self._path: Path | None = None
        self._seen: tuple[int, ...] | None = None  # the file's stat when last read

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> StaticTokens:
        """Read a token file, followed as it changes; ConfigError naming the entry and
        field when invalid."""
        path = Path(path)
        seen, entries = _read(path)
        tokens = cls(entries)
        tokens._path, tokens._seen = path, seen
        return tokens

    def _follow(self) -> None:
        """Re-read the file if its stat changed; keep the tokens we have if it is bad."""
        assert self._path is not None
        try:
            seen = _signature(self._path.stat())
        except OSError as err:
            seen = (-1,)
            problem = f"{self._path}: cannot read the token file: {err}"
        else:
            if seen == self._seen:
                return
            try:
                seen, entries = _read(self._path)
            except ConfigError as err:
                problem = "; ".join(str(p) for p in err.problems)
            else:
                self._entries = tuple(_Entry(bytes.fromhex(d), sa) for d, sa in entries)
                self._seen = seen
                log.info("token file %s reloaded: %d token(s)", self._path, len(entries))
                return
        if seen != self._seen:  # say it once per change
            log.error("keeping the previous tokens: %s", problem)
            self._seen = seen

    def authenticate(self, token: str) -> Caller:
        if self._path is not None:
            self._follow()
        if not token or len(token) > _MAX_TOKEN_BYTES:
            raise AuthenticationError("missing or oversized bearer token")
        digest = hashlib.sha256(token.encode()).digest()
        # Compare against every entry (no early exit) so timing says nothing.
        matched = [e.service_account for e in self._entries
                   if hmac.compare_digest(digest, e.digest)]
        if not matched:
            raise AuthenticationError("unknown bearer token")
        return Caller(tuple(matched))


def _signature(info: os.stat_result) -> tuple[int, ...]:
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _read(path: Path) -> tuple[tuple[int, ...], list[tuple[str, str]]]:
    """The file's stat signature and its entries; ConfigError when invalid."""
    try:
        with path.open("rb") as f:
            info = os.fstat(f.fileno())
            doc = yaml.safe_load(f.read().decode())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError([f"{path}: cannot read the token file: {err}"]) from err
    mode = info.st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("token file %s is readable by group or others; chmod 600 it", path)
    items = doc.get("tokens") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ConfigError([f"{path}: expected a mapping with a 'tokens' list"])
    entries: list[tuple[str, str]] = []
    problems: list[str] = []
    for i, item in enumerate(items):
        where = f"{path}: tokens[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping")
            continue
        sa = item.get("serviceAccount")
        if not isinstance(sa, str) or not _SERVICE_ACCOUNT.fullmatch(sa):
            problems.append(f"{where}.serviceAccount: expected 'namespace/name' "
                            "(DNS labels; name may be '*')")
            continue
        digest, token = item.get("sha256"), item.get("token")
        if (digest is None) == (token is None):
            problems.append(f"{where}: give exactly one of 'sha256' and 'token'")
            continue
        if token is not None:
            if not isinstance(token, str) or len(token) < 16:
                problems.append(f"{where}.token: must be a string of 16+ characters")
                continue
            digest = hash_token(token)
        if not isinstance(digest, str) or len(digest) != 64 or not _is_hex(digest):
            problems.append(f"{where}.sha256: expected 64 hex digits")
            continue
        entries.append((digest.lower(), sa))
    if problems:
        raise ConfigError(problems)
    return _signature(info), entries


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True
