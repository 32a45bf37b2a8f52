"""Private files written atomically: workload keys, the CA key, the xDS cache.

One way for the library and the control plane to write a file that holds a secret
or must never be seen half-written: a fresh ``mkstemp`` file beside the target (no
fixed name to plant a file or symlink at), its mode set with ``fchmod`` before any
byte is written, flushed to disk, then ``os.replace``\\ d over the target. Readers see
the old file or the new one, never a mix. Import it by name
(``from meshlib.contract.files import write_atomic``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Replace the file at ``path`` with ``data``, mode ``mode``; raises ``OSError``.
    The directory must exist."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
