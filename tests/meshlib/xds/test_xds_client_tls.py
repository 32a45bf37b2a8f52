"""The ADS channel over mTLS (``XdsClientConfig.tls``): the client waits for its first
certificate before it connects, a secure control plane admits it by that certificate,
and each new connection is made of the material current then (a rotated certificate, a
re-read root file)."""

from __future__ import annotations

import asyncio

from meshlib.contract import LISTENER
from meshlib.xds import ChannelTls, WatcherFuncs, XdsClient, XdsClientConfig
from tests.xds_server.server.secure_ads import SHOP, TD, SecureControlPlane, secure_fixture  # noqa: F401 - fixture


async def test_the_client_waits_for_its_certificate_then_connects_over_mtls(secure):
    material: list[ChannelTls | None] = [None]
    asked = []

    def tls() -> ChannelTls | None:
        asked.append(material[0])
        return material[0]

    config = XdsClientConfig(server_address=f"localhost:{secure.port}", node_id="frontend-1",
                             namespace="payments", tls=tls)  # claims another namespace
    got = asyncio.Event()
    async with XdsClient(config) as client:
        client.watch(LISTENER, "reviews", WatcherFuncs(changed=lambda update: got.set()))
        await asyncio.sleep(0.3)
        assert asked == [None] and secure.groups() == []  # no certificate: no stream
        key, chain = secure.certificate(SHOP)
        material[0] = (secure.ca.roots_pem(), key, chain)
        client.tls_changed()
        await asyncio.wait_for(got.wait(), 5)
        assert secure.groups() == ["meshlib/shop"]  # its identity's, not its claim


async def test_each_connection_is_made_of_the_current_material(secure):
    roots = secure.ca.roots_pem()
    first, second = secure.certificate(SHOP), secure.certificate(SHOP)
    material: list[ChannelTls] = [(roots, *first)]
    config = XdsClientConfig(server_address=f"localhost:{secure.port}", node_id="n",
                             tls=lambda: material[0])
    client = XdsClient(config)
    try:
        await client._fresh_channel()
        channel = client._channel
        await client._fresh_channel()
        assert client._channel is channel  # same material: same channel
        material[0] = (roots, *second)  # a rotation
        await client._fresh_channel()
        assert client._channel is not channel and client._channel_tls == material[0]
    finally:
        await client.close()


async def test_unreadable_material_is_an_outage_not_a_crash(secure, caplog):
    def tls() -> ChannelTls:
        raise OSError("cannot read the pinned CA root /nowhere")

    config = XdsClientConfig(server_address=f"localhost:{secure.port}", node_id="n", tls=tls)
    client = XdsClient(config)
    try:
        error, got_response = await client._stream_once()
        assert not got_response and "cannot read the pinned CA root" in str(error)
    finally:
        await client.close()
