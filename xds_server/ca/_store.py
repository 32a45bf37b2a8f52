"""Where the CA's key and certificate live: a seam with a directory store for file mode.

Kubernetes mode keeps them in a Secret (``SecretCaStore``) behind the same
:class:`CaStore` protocol.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Protocol

from meshlib.contract import ConfigError, Problem
from meshlib.contract.files import write_atomic

__all__ = ["CA_CERT_FILE", "CA_KEY_FILE", "CaAlreadyStored", "CaStore", "DirectoryCaStore"]

CA_KEY_FILE = "ca-key.pem"
CA_CERT_FILE = "ca-cert.pem"


class CaAlreadyStored(Exception):
    """``save`` found a CA already there (another replica created it first): load it."""


class CaStore(Protocol):
    """Keeps the CA key and certificate (PEM)."""

    def load(self) -> tuple[bytes, bytes] | None:
        """``(key_pem, cert_pem)``, or None when there is no CA yet."""
        ...

    def save(self, key_pem: bytes, cert_pem: bytes) -> None:
        """Keep a newly created CA; :class:`CaAlreadyStored` if one appeared meanwhile."""
        ...


class DirectoryCaStore:
    """``ca-key.pem`` (mode 0600) and ``ca-cert.pem`` in a directory (mode 0700).

    Whoever can write the directory or the files can swap the CA (and so every
    workload's trust), and whoever can read the key can mint certificates: ``load``
    refuses, with a :class:`ConfigError` naming the path and the fix, a directory or
    file that another user owns or that group/others may write, and a key that
    group/others may read.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def load(self) -> tuple[bytes, bytes] | None:
        key, cert = self.directory / CA_KEY_FILE, self.directory / CA_CERT_FILE
        if self.directory.exists():
            _check_private(self.directory, "CA directory", 0o022, "chmod 700")
        for path, what, forbidden, fix in ((key, "CA key", 0o077, "chmod 600"),
                                           (cert, "CA certificate", 0o022, "chmod 644")):
            if path.exists():
                _check_private(path, what, forbidden, fix)
        if not key.exists() and not cert.exists():
            return None
        if not (key.exists() and cert.exists()):
            missing = key if not key.exists() else cert
            raise FileNotFoundError(f"CA: {missing} is missing (need both {CA_KEY_FILE} and "
                                    f"{CA_CERT_FILE} in {self.directory}, or neither)")
        return key.read_bytes(), cert.read_bytes()

    def save(self, key_pem: bytes, cert_pem: bytes) -> None:
        if not self.directory.exists():
            self.directory.mkdir(parents=True, mode=0o700)
            self.directory.chmod(0o700)  # whatever the umask
        _check_private(self.directory, "CA directory", 0o022, "chmod 700")
        write_atomic(self.directory / CA_KEY_FILE, key_pem, mode=0o600)
        write_atomic(self.directory / CA_CERT_FILE, cert_pem, mode=0o644)


def _check_private(path: Path, what: str, forbidden: int, fix: str) -> None:
    """ConfigError unless ``path`` is ours and has none of the ``forbidden`` mode bits."""
    info = path.stat()
    owner = os.geteuid()
    if info.st_uid != owner:
        raise ConfigError([Problem(
            source=str(path),
            message=f"{what} is owned by uid {info.st_uid}, not by this process (uid "
                    f"{owner}); refusing to use it: chown {owner} {path}")])
    mode = stat.S_IMODE(info.st_mode)
    if mode & forbidden:
        may = "read or write" if forbidden & 0o044 else "write"
        raise ConfigError([Problem(
            source=str(path),
            message=f"{what} has mode {mode:04o}: group or others may {may} it; "
                    f"refusing to use it: {fix} {path}")])
