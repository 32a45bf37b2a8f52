"""Where the CA's key and certificate live: a seam with a directory store for file mode.

Kubernetes mode will keep them in a Secret (its own issue) behind the same
:class:`CaStore` protocol.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

__all__ = ["CA_CERT_FILE", "CA_KEY_FILE", "CaStore", "DirectoryCaStore"]

CA_KEY_FILE = "ca-key.pem"
CA_CERT_FILE = "ca-cert.pem"


class CaStore(Protocol):
    """Keeps the CA key and certificate (PEM)."""

    def load(self) -> tuple[bytes, bytes] | None:
        """``(key_pem, cert_pem)``, or None when there is no CA yet."""
        ...

    def save(self, key_pem: bytes, cert_pem: bytes) -> None:
        """Keep a newly created CA."""
        ...


class DirectoryCaStore:
    """``ca-key.pem`` (mode 0600) and ``ca-cert.pem`` in a directory."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def load(self) -> tuple[bytes, bytes] | None:
        key, cert = self.directory / CA_KEY_FILE, self.directory / CA_CERT_FILE
        if not key.exists() and not cert.exists():
            return None
        if not (key.exists() and cert.exists()):
            missing = key if not key.exists() else cert
            raise FileNotFoundError(f"CA: {missing} is missing (need both {CA_KEY_FILE} and "
                                    f"{CA_CERT_FILE} in {self.directory}, or neither)")
        return key.read_bytes(), cert.read_bytes()

    def save(self, key_pem: bytes, cert_pem: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write(self.directory / CA_KEY_FILE, key_pem, 0o600)
        _write(self.directory / CA_CERT_FILE, cert_pem, 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
