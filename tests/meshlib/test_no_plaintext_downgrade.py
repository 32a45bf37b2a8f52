"""A Mesh with an identity never calls an mTLS destination in plaintext: before its
first certificate (the CA unreachable at start), such calls raise CertificateError
naming the destination; destinations that do not take mTLS are still called."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from meshlib import CertificateError
from meshlib._pool import AioChannelPool, ChannelPool

SERVER_NAME = "reviews.default.sa.cluster.local"


def test_the_sync_pool_refuses_to_downgrade_once_a_certificate_is_expected():
    pool = ChannelPool()
    try:
        # No identity at all: PERMISSIVE destinations are called in plaintext.
        assert pool.get("127.0.0.1:1", SERVER_NAME) is pool.get("127.0.0.1:1")
        pool.needs_certificate = True
        with pytest.raises(CertificateError, match=r"127\.0\.0\.2:1 takes mTLS") as err:
            pool.get("127.0.0.2:1", SERVER_NAME)
        assert "never calls it in plaintext" in str(err.value)
        assert pool.get("127.0.0.2:1") is not None  # no mTLS asked: plaintext is right
        pool.set_credentials(grpc.ssl_channel_credentials())
        assert pool.get("127.0.0.2:1", SERVER_NAME) is not None
    finally:
        pool.close()


def test_the_aio_pool_refuses_too():
    async def main() -> None:
        pool = AioChannelPool(asyncio.get_running_loop())
        pool.needs_certificate = True
        with pytest.raises(CertificateError):
            pool.get("127.0.0.2:1", SERVER_NAME)
        await pool.close()

    asyncio.run(main())


def test_a_mesh_with_an_identity_expects_a_certificate(mesh_control_plane):
    plain = mesh_control_plane.mesh("plain")
    assert not plain.clients.pool.needs_certificate
    secure = mesh_control_plane.mesh("secure", identity=True)
    assert secure.clients.pool.needs_certificate

    async def aio_pool_flag() -> bool:
        return secure.clients.aio_pool().needs_certificate

    assert asyncio.run(aio_pool_flag())
