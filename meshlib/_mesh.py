"""``Mesh``: what an application holds — the xDS connection and channels to targets.

One Mesh per process is the norm. It runs meshlib's xDS client on a daemon thread of
its own (an asyncio loop), so sync and asyncio code share one control-plane stream and
one set of per-endpoint channels; calls never wait on that thread, they read the
routing tables it swaps in.

Example::

    with meshlib.Mesh(xds_address="127.0.0.1:15010", service="frontend") as mesh:
        stub = ReviewsStub(mesh.channel("reviews"))
        stub.Get(request, timeout=2.0)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from meshlib._aio_channel import AioMeshChannel
from meshlib._channel import MeshChannel
from meshlib._cluster_state import ClusterState
from meshlib._pool import DEFAULT_CLOSE_GRACE, AioChannelPool, ChannelPool
from meshlib._resolver import ClusterRegistry, Target, TargetResolver
from meshlib.errors import MeshError
from meshlib.xds import XdsClient, XdsClientConfig, XdsProtocol

__all__ = ["DEFAULT_RESOLVE_TIMEOUT", "Mesh"]

log = logging.getLogger("meshlib")

DEFAULT_RESOLVE_TIMEOUT = 10.0  # seconds a first call waits for its target's config
_T = TypeVar("_T")


class Mesh:
    """The mesh as one application sees it.

    ``xds_address`` is the control plane (``host:port``). ``node_id`` defaults to
    ``<service>-<hostname>-<pid>``. ``namespace`` is where short targets
    (``reviews``) resolve, as in Kubernetes DNS. ``cache_path`` keeps the last good
    configuration on disk so a restart works while the control plane is down.
    ``xds_protocol`` is ``auto`` (delta ADS, falling back to state-of-the-world when
    the control plane lacks it), ``delta`` or ``sotw``.
    A first call waits at most ``resolve_timeout`` seconds (or its own timeout) for
    its target's configuration.
    """

    def __init__(self, xds_address: str, *, node_id: str | None = None, service: str = "",
                 namespace: str = "default", cache_path: str | None = None,
                 xds_protocol: XdsProtocol = "auto",
                 resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT,
                 channel_options: Sequence[tuple[str, Any]] = (),
                 close_grace: float = DEFAULT_CLOSE_GRACE,
                 sleep: Callable[[float], Any] | None = None) -> None:
        if not xds_address:
            raise MeshError("Mesh needs xds_address (host:port of the control plane)")
        self.xds_address = xds_address
        self.service = service
        self.namespace = namespace
        self.node_id = node_id or f"{service or 'meshlib'}-{socket.gethostname()}-{os.getpid()}"
        self.resolve_timeout = resolve_timeout
        self._channel_options = tuple(channel_options)
        self._close_grace = close_grace
        self._sleep = sleep
        config_args: dict[str, Any] = {"server_address": xds_address, "node_id": self.node_id,
                                       "namespace": namespace}
        if cache_path is not None:
            config_args["cache_path"] = cache_path
        config_args["protocol"] = xds_protocol
        self._xds_config = XdsClientConfig(**config_args)
        self._targets: dict[str, Target] = {}
        self._resolvers: dict[str, TargetResolver] = {}
        self._aio_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AioChannelPool]
        self._aio_pools = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._pool = ChannelPool(options=self._channel_options, grace=close_grace,
                                 schedule=self._call_later)
        self._client: XdsClient | None = None
        self._registry: ClusterRegistry | None = None
        self._thread = threading.Thread(target=self._run_loop, name="meshlib-xds", daemon=True)
        self._thread.start()
        self._on_loop(self._start_client).result()

    # ------------------------------------------------------------ construction

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Mesh:
        """A Mesh configured from the environment.

        ``MESHLIB_XDS_ADDRESS`` (else the first server of the gRPC bootstrap named by
        ``GRPC_XDS_BOOTSTRAP``), ``MESHLIB_NODE_ID``, ``MESHLIB_SERVICE``,
        ``MESHLIB_NAMESPACE`` (else ``POD_NAMESPACE``, else ``default``),
        ``MESHLIB_XDS_CACHE`` (path of the persisted configuration),
        ``MESHLIB_XDS_PROTOCOL`` (``auto``, ``delta`` or ``sotw``) and
        ``MESHLIB_RESOLVE_TIMEOUT`` (seconds). Keyword arguments override them.
        """
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        address = env.get("MESHLIB_XDS_ADDRESS", "")
        node_id = env.get("MESHLIB_NODE_ID") or None
        if not address and env.get("GRPC_XDS_BOOTSTRAP"):
            address, boot_node = _from_bootstrap(env["GRPC_XDS_BOOTSTRAP"])
            node_id = node_id or boot_node
        if not address and "xds_address" not in overrides:
            raise MeshError("Mesh.from_env: set MESHLIB_XDS_ADDRESS=host:port (or "
                            "GRPC_XDS_BOOTSTRAP) to the control plane's xDS address")
        kwargs["xds_address"] = address
        kwargs["node_id"] = node_id
        kwargs["service"] = env.get("MESHLIB_SERVICE", "")
        kwargs["namespace"] = env.get("MESHLIB_NAMESPACE") or env.get("POD_NAMESPACE") \
            or "default"
        if env.get("MESHLIB_XDS_CACHE"):
            kwargs["cache_path"] = env["MESHLIB_XDS_CACHE"]
        if env.get("MESHLIB_XDS_PROTOCOL"):
            protocol = env["MESHLIB_XDS_PROTOCOL"]
            if protocol not in ("auto", "delta", "sotw"):
                raise MeshError(f"MESHLIB_XDS_PROTOCOL must be auto, delta or sotw, got "
                                f"{protocol!r}")
            kwargs["xds_protocol"] = protocol
        if env.get("MESHLIB_RESOLVE_TIMEOUT"):
            try:
                kwargs["resolve_timeout"] = float(env["MESHLIB_RESOLVE_TIMEOUT"])
            except ValueError:
                raise MeshError("MESHLIB_RESOLVE_TIMEOUT must be a number of seconds, got "
                                f"{env['MESHLIB_RESOLVE_TIMEOUT']!r}") from None
        kwargs.update(overrides)
        return cls(**kwargs)

    # ------------------------------------------------------------ channels

    def channel(self, target: str) -> MeshChannel:
        """A ``grpc.Channel`` to ``target`` (``name``, ``name.namespace`` or the FQDN,
        each with an optional ``:port``) running the whole client pipeline."""
        return MeshChannel(self._target(target), self._pool, xds_address=self.xds_address,
                           resolve_timeout=self.resolve_timeout, sleep=self._sleep)

    def aio_channel(self, target: str) -> AioMeshChannel:
        """A ``grpc.aio.Channel`` to ``target``; use it on one event loop."""
        return AioMeshChannel(self._target(target), self._aio_pool,
                              xds_address=self.xds_address,
                              resolve_timeout=self.resolve_timeout)

    def wait_ready(self, target: str, timeout: float | None = None) -> bool:
        """Block until ``target``'s configuration is known; False on timeout or if the
        target is not in the mesh."""
        t = self._target(target)
        t.ready.wait(self.resolve_timeout if timeout is None else timeout)
        return t.table is not None

    def _target(self, name: str) -> Target:
        if self._closed:
            raise MeshError("this Mesh is closed")
        name = name.removeprefix("xds:///").removeprefix("dns:///")
        if not name:
            raise MeshError("empty target: give a service name, e.g. 'reviews'")
        with self._lock:
            target = self._targets.get(name)
            if target is not None:
                return target
            target = self._targets[name] = Target(name)
        self._loop.call_soon_threadsafe(self._resolve, target)
        return target

    def _aio_pool(self) -> AioChannelPool:
        loop = asyncio.get_running_loop()
        pool = self._aio_pools.get(loop)
        if pool is None:
            pool = self._aio_pools[loop] = AioChannelPool(
                loop, options=self._channel_options, grace=self._close_grace)
        return pool

    # ------------------------------------------------------------ the xDS thread

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _on_loop(self, fn: Callable[[], Awaitable[_T]] | Callable[[], _T]) -> Future[Any]:
        async def run() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result
        return asyncio.run_coroutine_threadsafe(run(), self._loop)

    def _call_later(self, delay: float, fn: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed: the pool closes anyway
            self._loop.call_soon_threadsafe(self._loop.call_later, delay, fn)

    def _start_client(self) -> None:
        self._client = XdsClient(self._xds_config)
        self._client.start()
        self._registry = ClusterRegistry(self._client, self._make_cluster)

    def _make_cluster(self, name: str) -> ClusterState:
        return ClusterState(name, on_endpoints=self._endpoints_changed)

    def _endpoints_changed(self, cluster: ClusterState, added: set[str],
                           removed: set[str]) -> None:
        for address in added:
            self._pool.acquire(address)
        for address in removed:
            self._pool.release(address)
        if removed:
            still_used = self._pool.in_use
            for pool in list(self._aio_pools.values()):
                for address in removed:
                    pool.drop(address, still_used)

    def _resolve(self, target: Target) -> None:
        if self._closed or self._client is None or self._registry is None:
            return
        self._resolvers[target.name] = TargetResolver(target, self._client, self._registry)

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the xDS stream and close every endpoint channel (sync ones here;
        ``grpc.aio`` ones need :meth:`aclose` on their loop, or go with it)."""
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            for resolver in self._resolvers.values():
                resolver.close()
            self._resolvers.clear()
            if self._client is not None:
                await self._client.close()
            await asyncio.sleep(0.01)  # let grpc.aio finish its own status tasks
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        try:
            self._on_loop(shutdown).result(timeout=5)
        except Exception:  # still stop the thread and the channels
            log.warning("meshlib: the xDS client did not shut down cleanly", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        with contextlib.suppress(RuntimeError):
            self._loop.close()
        self._pool.close()

    async def aclose(self) -> None:
        """Close this loop's ``grpc.aio`` endpoint channels, then everything else."""
        with contextlib.suppress(RuntimeError):
            pool = self._aio_pools.pop(asyncio.get_running_loop(), None)
            if pool is not None:
                await pool.close()
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Mesh:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (f"Mesh(xds_address={self.xds_address!r}, node_id={self.node_id!r}, "
                f"namespace={self.namespace!r})")


def _from_bootstrap(path: str) -> tuple[str, str | None]:
    try:
        with open(path) as f:
            data = json.load(f)
        uri = data["xds_servers"][0]["server_uri"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise MeshError(f"GRPC_XDS_BOOTSTRAP={path}: cannot read the xDS server from it: "
                        f"{err}") from err
    return uri.removeprefix("dns:///"), (data.get("node") or {}).get("id")
