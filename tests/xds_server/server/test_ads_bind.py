"""The ADS port is never shared: a second server on it raises BindError naming it.

gRPC sets SO_REUSEPORT by default, so without ``NO_REUSEPORT`` a second control plane
would "bind" beside the first and fresh clients would get either one's config.
"""

from __future__ import annotations

import errno

import pytest

from meshlib.contract import BindError, MeshError
from xds_server.cache import SnapshotCache
from xds_server.server import serve


async def test_a_port_held_by_a_plain_socket_is_refused(held_port):
    with pytest.raises(BindError) as caught:
        await serve(("127.0.0.1", held_port), SnapshotCache())
    assert str(caught.value) == (
        f"cannot serve xDS on 127.0.0.1:{held_port}: address already in use")
    assert caught.value.errno == errno.EADDRINUSE
    assert isinstance(caught.value, MeshError) and isinstance(caught.value, OSError)


@pytest.mark.parametrize("checked", [True, False], ids=["checked", "grpc-only"])
async def test_a_second_server_on_the_port_of_the_first_is_refused(monkeypatch, checked):
    if not checked:  # gRPC's own bind must refuse too: NO_REUSEPORT, not only the check
        monkeypatch.setattr("xds_server.server.ads.check_free", lambda *a, **k: None)
    first, port = await serve(("127.0.0.1", 0), SnapshotCache())
    try:
        with pytest.raises(BindError, match=f"cannot serve xDS on 127.0.0.1:{port}: "):
            await serve(f"127.0.0.1:{port}", SnapshotCache())
    finally:
        await first.stop(None)


async def test_the_port_serves_again_once_the_first_server_stopped():
    first, port = await serve(("127.0.0.1", 0), SnapshotCache())
    await first.stop(None)
    second, again = await serve(("127.0.0.1", port), SnapshotCache())
    await second.stop(None)
    assert again == port
