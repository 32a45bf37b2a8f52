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
