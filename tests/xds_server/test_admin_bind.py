"""The admin endpoint refuses a busy port with a BindError naming the address."""

from __future__ import annotations

import socket

import pytest

from meshlib.contract import BindError
from xds_server.admin import AdminServer, AdminViews

VIEWS = AdminViews(ready=lambda: (True, "ok"), metrics=lambda: b"",
                   config_dump=lambda node: None)


def test_a_busy_admin_port_is_refused_naming_the_address():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BindError) as caught:
            AdminServer(("127.0.0.1", port), VIEWS)
    assert str(caught.value) == f"cannot serve admin on 127.0.0.1:{port}: address already in use"


def test_an_ipv6_admin_address_serves():
    server = AdminServer(("::1", 0), VIEWS)
    server.start()
    try:
        with socket.create_connection(("::1", server.port), timeout=2) as sock:
            sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.0 200")
    finally:
        server.stop()


def test_an_unknown_admin_host_says_so_in_words():
    with pytest.raises(BindError) as caught:
        AdminServer(("nohost.invalid", 0), VIEWS)
    message = str(caught.value)
    assert message.startswith("cannot serve admin on nohost.invalid:0: ")
    assert "unknown error" not in message
