"""Where ``meshctl agent`` listens: loopback or a private Unix socket, never shared.

The agent serves plaintext, under the workload's identity, so only the workload beside
it may reach it: :func:`parse_listen` refuses a non-loopback host unless told, and
:func:`check_listen` refuses a Unix socket in a directory other users may write, or one
another agent serves (gRPC would unlink a live socket and take the path over).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from meshlib.contract import BindError, check_free
from meshlib.contract.listen import address_of

__all__ = ["DEFAULT_LISTEN", "WHAT", "Listen", "check_listen", "parse_listen"]

DEFAULT_LISTEN = "127.0.0.1:15011"
WHAT = "serve the xDS agent"  # BindError's "cannot <what> on <address>"


@dataclass(frozen=True, slots=True)
class Listen:
    """Where the agent listens: a loopback ``host``:``port``, or a Unix socket ``path``."""

    host: str = ""
    port: int = 0
    path: Path | None = None

    def target(self, port: int | None = None) -> str:
        """The address as gRPC targets and bootstraps write it (``unix:///abs/path`` or
        ``127.0.0.1:PORT``), with the bound ``port`` once known."""
        if self.path is not None:
            return f"unix://{self.path}"
        return address_of(self.host, self.port if port is None else port)


def parse_listen(value: str, *, allow_non_loopback: bool = False) -> Listen:
    """``unix:/path`` / ``unix:///path`` (a Unix socket; relative paths are made
    absolute) or ``HOST:PORT`` (an empty host is 127.0.0.1). A host that is not a
    loopback address is a ``ValueError`` unless ``allow_non_loopback``: anyone who
    reaches the port would get this workload's xDS view, under its identity."""
    if value.startswith("unix:"):
        rest = value.removeprefix("unix:")
        if rest.startswith("//"):  # unix:///abs/path; unix://host/... is not a path
            if not rest.startswith("///"):
                raise ValueError(f"expected unix:/PATH or unix:///PATH, got {value!r}")
            rest = rest[2:]
        if not rest:
            raise ValueError(f"expected unix:/PATH, got {value!r}")
        return Listen(path=Path(os.path.abspath(rest)))
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT or unix:/PATH, got {value!r}")
    host = host.strip("[]") or "127.0.0.1"
    if not allow_non_loopback and not _is_loopback(host):
        raise ValueError(
            f"{host} is not a loopback address: the agent serves this workload's "
            "configuration, under its identity, in plaintext, to whoever connects. "
            "Listen on 127.0.0.1, ::1 or a Unix socket (or pass --allow-non-loopback "
            "if the network really is private)")
    return Listen(host=host, port=int(port))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_unix_path(path: Path) -> None:
    """Make the socket's directory (0700) if missing; refuse a directory others may
    write (unless sticky, as /tmp), a path that is not a socket, and a socket another
    process serves (gRPC would unlink and take it over)."""
    address = f"unix:{path}"
    parent = path.parent
    try:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = parent.stat().st_mode
    except OSError as err:
        raise BindError.from_os_error(address, err, what=WHAT) from None
    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
        raise BindError(address, f"its directory {parent} is writable by other users "
                        "(who could replace the socket): use a private directory",
                        what=WHAT)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError(address, "the path exists and is not a socket", what=WHAT,
                        errno=errno.EEXIST)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:  # a stale socket of a stopped agent: gRPC replaces it
            return
    raise BindError(address, "address already in use (another agent serves it)",
                    what=WHAT, errno=errno.EADDRINUSE)


def check_listen(listen: Listen) -> None:
    """:class:`BindError` unless the agent can listen there now."""
    if listen.path is not None:
        _check_unix_path(listen.path)
    else:
        check_free(listen.host, listen.port, what=WHAT)
