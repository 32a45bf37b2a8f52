"""What every client of one Mesh shares: targets and their routing tables, the
clusters and per-endpoint channel pools, telemetry, the identity's credentials.

:class:`Clients` is the seam the four drivers of the call pipeline use — the grpc
sync and aio channels and the httpx sync and async transports — instead of reaching
into a Mesh. Targets resolve on the Mesh's loop (LDS → RDS → CDS → EDS, see
:mod:`meshlib._resolver`); calls only read the table each target publishes.

Each driver's module is imported when the first client of its kind is made, so a
process that only makes sync gRPC channels never imports the aio channel or httpx.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from meshlib._cluster_state import ClusterState
from meshlib._loop import BackgroundLoop
from meshlib._pool import AioChannelPool, CallableTracker, ChannelPool
from meshlib._resolver import ClusterRegistry, Target, TargetResolver
from meshlib._settings import MeshSettings
from meshlib.errors import MeshError
from meshlib.resilience import async_sleep

if TYPE_CHECKING:
    import httpx

    from meshlib._aio_channel import AioMeshChannel
    from meshlib._channel import MeshChannel
    from meshlib.security import CertificateSource, WorkloadCertificate
    from meshlib.telemetry import ClientTelemetry
    from meshlib.xds import XdsClient

__all__ = ["Clients"]


class Clients:
    """The client side of a Mesh (see the module docstring).

    ``telemetry`` is None when telemetry is off; ``certificates`` is the identity's
    certificate source, or None. Made by :class:`~meshlib.Mesh`; the transports get
    it as ``mesh.clients``.
    """

    def __init__(self, settings: MeshSettings, loop: BackgroundLoop,
                 telemetry: ClientTelemetry | None) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self._certificates: CertificateSource | None = None
        # The injected sleep, awaitable; time.sleep (the default) becomes asyncio.sleep.
        self.async_sleep: Callable[[float], Awaitable[Any]] = async_sleep(
            None if settings.sleep is time.sleep else settings.sleep)
        self._loop = loop
        self.tracker = CallableTracker()
        self.pool = ChannelPool(options=settings.channel_options, grace=settings.close_grace,
                                schedule=loop.call_later, tracker=self.tracker)
        self._aio_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AioChannelPool]
        self._aio_pools = weakref.WeakKeyDictionary()
        self._credentials: grpc.ChannelCredentials | None = None
        self._targets: dict[str, Target] = {}
        self._resolvers: dict[str, TargetResolver] = {}
        self._lock = threading.Lock()
        self._xds: XdsClient | None = None
        self.registry: ClusterRegistry | None = None
        self.closed = False

    # ------------------------------------------------------------ on the loop

    def attach(self, xds: XdsClient) -> None:
        """Follow targets through ``xds`` (on the loop, once the client runs)."""
        self._xds = xds
        self.registry = ClusterRegistry(xds, self._make_cluster)

    def _make_cluster(self, name: str) -> ClusterState:
        return ClusterState(name, clock=self.settings.clock,
                            on_endpoints=self._endpoints_changed,
                            on_server_name=self.tracker.forget_channels)

    def _endpoints_changed(self, cluster: ClusterState, added: set[str],
                           removed: set[str]) -> None:
        for address in added:
            self.pool.acquire(address)
        for address in removed:
            self.pool.release(address)
        if removed:
            still_used = self.pool.in_use
            for pool in list(self._aio_pools.values()):
                for address in removed:
                    pool.drop(address, still_used)

    def _resolve(self, target: Target) -> None:
        if self.closed or self._xds is None or self.registry is None:
            return
        self._resolvers[target.name] = TargetResolver(target, self._xds, self.registry)

    def cluster_states(self) -> list[ClusterState]:
        """Every cluster in use (for metrics)."""
        registry = self.registry
        return registry.states() if registry is not None else []

    # ------------------------------------------------------------ any thread

    def target(self, name: str) -> Target:
        """The :class:`~meshlib._resolver.Target` for ``name`` (``name``,
        ``name.namespace`` or the FQDN, each with an optional ``:port``), resolved on
        the loop from its first use."""
        if self.closed:
            raise MeshError("this Mesh is closed")
        name = name.removeprefix("xds:///").removeprefix("dns:///")
        if not name:
            raise MeshError("empty target: give a service name, e.g. 'reviews'")
        target = self._targets.get(name)
        if target is not None:
            return target
        with self._lock:
            target = self._targets.get(name)
            if target is not None:
                return target
            target = self._targets[name] = Target(name)
        self._loop.call_soon(self._resolve, target)
        return target

    @property
    def certificates(self) -> CertificateSource | None:
        """The identity's certificate source, or None (no identity: plaintext)."""
        return self._certificates

    @certificates.setter
    def certificates(self, source: CertificateSource | None) -> None:
        self._certificates = source
        needed = source is not None
        self.pool.needs_certificate = needed
        for pool in list(self._aio_pools.values()):
            pool.needs_certificate = needed

    def aio_pool(self) -> AioChannelPool:
        """The ``grpc.aio`` endpoint channels of the running event loop."""
        loop = asyncio.get_running_loop()
        pool = self._aio_pools.get(loop)
        if pool is None:
            pool = self._aio_pools[loop] = AioChannelPool(
                loop, options=self.settings.channel_options, grace=self.settings.close_grace,
                credentials=self._credentials, tracker=self.tracker)
            pool.needs_certificate = self._certificates is not None
        return pool

    def set_certificate(self, cert: WorkloadCertificate) -> None:
        """A new workload certificate: secure endpoint channels use it from now on."""
        credentials = grpc.ssl_channel_credentials(cert.roots_pem, cert.key_pem,
                                                   cert.chain_pem)
        self._credentials = credentials
        self.pool.set_credentials(credentials)
        for pool in list(self._aio_pools.values()):
            pool.set_credentials(credentials)

    def channel(self, target: str) -> MeshChannel:
        """A ``grpc.Channel`` to ``target`` running the whole client pipeline."""
        from meshlib._channel import MeshChannel

        return MeshChannel(self.target(target), self)

    def aio_channel(self, target: str) -> AioMeshChannel:
        """A ``grpc.aio.Channel`` to ``target``; use it on one event loop."""
        from meshlib._aio_channel import AioMeshChannel

        return AioMeshChannel(self.target(target), self)

    def http_client(self, **client_options: Any) -> httpx.Client:
        """An ``httpx.Client`` whose requests to ``http://<service>/...`` run the mesh
        pipeline; ``client_options`` go to ``httpx.Client``."""
        import httpx

        from meshlib._http import MeshTransport

        return httpx.Client(transport=MeshTransport(self), **client_options)

    def async_http_client(self, **client_options: Any) -> httpx.AsyncClient:
        """The ``httpx.AsyncClient`` counterpart of :meth:`http_client`."""
        import httpx

        from meshlib._http import AsyncMeshTransport

        return httpx.AsyncClient(transport=AsyncMeshTransport(self), **client_options)

    # ------------------------------------------------------------ lifecycle

    def stop_resolving(self) -> None:
        """On the loop: stop following every target."""
        for resolver in self._resolvers.values():
            resolver.close()
        self._resolvers.clear()

    def close(self) -> None:
        """Close the sync endpoint channels (aio ones go with their loop, or
        :meth:`aclose` there)."""
        self.pool.close()

    async def aclose(self) -> None:
        """Close the running loop's ``grpc.aio`` endpoint channels."""
        pool = self._aio_pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()

