"""How every server of the mesh listens: never on a port another process serves.

gRPC sets ``SO_REUSEPORT`` on its listening sockets by default, so a second server
on a busy port "binds" beside the first and the kernel spreads new connections over
both: a second control plane would serve fresh clients another config, silently.
Both sides (the control plane's ADS port and ``Mesh.server()``) therefore pass
:data:`NO_REUSEPORT` to gRPC and call :func:`check_free` before binding, which turns
a busy port into a :class:`~meshlib.contract.errors.BindError` naming the address
(gRPC itself only says "Failed to bind", after logging to stderr).

Example::

    check_free("127.0.0.1", 15010, what="serve xDS")   # BindError if in use
    server = grpc.aio.server(options=[NO_REUSEPORT])
    server.add_insecure_port("127.0.0.1:15010")
"""

from __future__ import annotations

import socket

from meshlib.contract.errors import BindError

__all__ = ["NO_REUSEPORT", "address_of", "check_free"]

NO_REUSEPORT = ("grpc.so_reuseport", 0)
"""The gRPC server option that keeps a busy port from being shared."""


def address_of(host: str, port: int) -> str:
    """``host:port`` as gRPC and people write it (``[::1]:50051`` for IPv6)."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_free(host: str, port: int, *, what: str = "serve") -> None:
    """Raise :class:`BindError` (``cannot <what> on host:port: <why>``) unless a server
    could listen on ``host:port`` now; port 0 (any free port) always can.

    The check binds a plain socket the way gRPC does (``SO_REUSEADDR``, so a port in
    ``TIME_WAIT`` counts as free, but no ``SO_REUSEPORT``) to every address ``host``
    resolves to, and closes it again.
    """
    if port == 0:
        return
    address = address_of(host, port)
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise BindError(address, f"unknown host ({err.strerror})", what=what) from None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
            except OSError as err:
                raise BindError.from_os_error(address, err, what=what) from None
