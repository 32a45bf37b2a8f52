"""Project-wide test setup: ``pytester`` for the tests of meshlib's pytest plugin, and
fixtures several test packages share."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

pytest_plugins = ("pytester",)


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port held by a plain listening socket (no SO_REUSEPORT)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]
