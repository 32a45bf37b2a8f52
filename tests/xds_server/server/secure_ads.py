"""A secure control plane in-process for tests: its xDS port requires a client
certificate from its CA and authenticates ADS streams by it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from meshlib.contract import SpiffeId
from meshlib.security import make_key_and_csr
from meshlib.testing import config
from xds_server.ca import CertificateAuthority, ServingCertificates
from xds_server.control_plane import ControlPlane
from xds_server.server import serve
from xds_server.sources.parse import parse_objects

TD = "cluster.local"
SHOP = SpiffeId(TD, "shop", "frontend")


def _model() -> Any:
    objects = config.flatten([
        config.service("reviews", namespace="shop"),
        config.endpoints("reviews", ["127.0.0.1:1"], namespace="shop"),
        config.service("reviews", namespace="payments"),
        config.endpoints("reviews", ["127.0.0.1:2"], namespace="payments"),
    ])
    model, problems = parse_objects([("test", o) for o in objects])
    assert not problems
    return model


class SecureControlPlane:
    """A control plane whose xDS port requires client certificates, on a loop thread;
    its config: Service ``reviews`` in namespaces ``shop`` and ``payments``."""

    def __init__(self) -> None:
        self.ca = CertificateAuthority.create(trust_domain=TD)
        self.cp = ControlPlane(_model())
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        serving = ServingCertificates(self.ca, ["localhost", "127.0.0.1"])

        async def start() -> Any:
            return await serve(("127.0.0.1", 0), self.cp.cache, self.cp.callbacks(),
                               credentials=serving.credentials(require_client_auth=True),
                               authenticated=True)

        self.server, self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.ads = self.server.ads
        self.serving = serving

    def certificate(self, identity: SpiffeId) -> tuple[bytes, bytes]:
        key_pem, csr_pem = make_key_and_csr(identity)
        issued = self.ca.issue(csr_pem, identity)
        return key_pem, issued.cert_pem + issued.chain_pem

    def channel(self, key_and_chain: tuple[bytes, bytes] | None) -> grpc.Channel:
        key, chain = key_and_chain or (None, None)
        creds = grpc.ssl_channel_credentials(self.ca.roots_pem(), key, chain)
        return grpc.secure_channel(f"localhost:{self.port}", creds)

    def groups(self) -> list[str]:
        async def read() -> list[str]:
            return [s.group for s in self.ads.registry.streams()]

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(5)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@pytest.fixture(name="secure")
def secure_fixture() -> Iterator[SecureControlPlane]:
    """A :class:`SecureControlPlane`, closed after the test."""
    cp = SecureControlPlane()
    yield cp
    cp.close()
