"""``Mesh``: what an application holds — the xDS connection and channels to targets.

One Mesh per process is the norm. It runs meshlib's xDS client on a daemon thread of
its own (an asyncio loop), so sync and asyncio code share one control-plane stream and
one set of per-endpoint channels; calls never wait on that thread, they read the
routing tables it swaps in.

Example::

    with meshlib.Mesh(xds_address="127.0.0.1:15010", service="frontend") as mesh:
        stub = ReviewsStub(mesh.channel("reviews"))
        stub.Get(request, timeout=2.0)

With an identity (``token``/``token_file`` for the control plane's CA, or
``cert_dir`` for mounted certificates) channels use mTLS to destinations that take
it, and :meth:`Mesh.server` serves with the mesh's mTLS mode and authorization.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

import grpc
import httpx

from meshlib._aio_channel import AioMeshChannel
from meshlib._channel import MeshChannel
from meshlib._cluster_state import ClusterState
from meshlib._pool import DEFAULT_CLOSE_GRACE, AioChannelPool, CallableTracker, ChannelPool
from meshlib._resolver import ClusterRegistry, Target, TargetResolver
from meshlib._server import MeshServer, ServerPolicy, build_server, server_listener_name
from meshlib.contract import DEFAULT_TRUST_DOMAIN, SpiffeId
from meshlib.errors import MeshError
from meshlib.security._certificates import (
    CertificateError,
    CertificateSource,
    FileCertificates,
    IssuedCertificates,
    WorkloadCertificate,
)
from meshlib.telemetry import MeshMetrics
from meshlib.telemetry._client import ClientTelemetry
from meshlib.xds import LISTENER, WatcherFuncs, XdsClient, XdsClientConfig, XdsProtocol

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

    Identity: the workload is ``spiffe://<trust_domain>/ns/<namespace>/sa/<sa>``,
    ``sa`` being ``service_account`` (default: ``service``). With ``token`` or
    ``token_file`` (a bearer token the control plane's CA accepts; a file is re-read
    at every renewal) the Mesh generates its key, gets a certificate from the
    control plane's CA at start (``cert_ttl`` seconds at most) and renews it at half
    its lifetime. With ``cert_dir`` it reads ``cert.pem``, ``key.pem`` and ``ca.pem``
    there and follows changes. Without either it has no identity and speaks
    plaintext.

    Telemetry (``telemetry=True``, the default): every call is counted in
    :attr:`metrics`, traced with OpenTelemetry as MeshConfig samples it and, when
    MeshConfig turns access logs on, logged as a JSON line (docs/telemetry.md).
    """

    def __init__(self, xds_address: str, *, node_id: str | None = None, service: str = "",
                 namespace: str = "default", cache_path: str | None = None,
                 xds_protocol: XdsProtocol = "auto",
                 resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT,
                 channel_options: Sequence[tuple[str, Any]] = (),
                 close_grace: float = DEFAULT_CLOSE_GRACE,
                 sleep: Callable[[float], Any] | None = None,
                 service_account: str | None = None,
                 trust_domain: str = DEFAULT_TRUST_DOMAIN,
                 token: str | None = None, token_file: str | None = None,
                 cert_dir: str | None = None, cert_ttl: float | None = None,
                 telemetry: bool = True) -> None:
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
        self._tracker = CallableTracker()
        self._pool = ChannelPool(options=self._channel_options, grace=close_grace,
                                 schedule=self._call_later, tracker=self._tracker)
        self._client_credentials: grpc.ChannelCredentials | None = None
        self._client: XdsClient | None = None
        self._registry: ClusterRegistry | None = None
        self.identity: SpiffeId | None = None
        self.certificates: CertificateSource | None = None
        self.first_certificate_seconds: float | None = None  # time to the first cert
        self._metrics: MeshMetrics | None = None  # made by the first server or scrape
        self._telemetry: ClientTelemetry | None = None
        if telemetry:
            self._telemetry = ClientTelemetry(self.metrics, service)
        self._thread = threading.Thread(target=self._run_loop, name="meshlib-xds", daemon=True)
        self._thread.start()
        self._on_loop(self._start_client).result()
        if token is not None or token_file is not None or cert_dir is not None:
            try:
                self._start_identity(service_account or service, trust_domain, token=token,
                                     token_file=token_file, cert_dir=cert_dir, ttl=cert_ttl)
            except BaseException:
                self.close()
                raise

    # ------------------------------------------------------------ construction

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Mesh:
        """A Mesh configured from the environment.

        ``MESHLIB_XDS_ADDRESS`` (else the first server of the gRPC bootstrap named by
        ``GRPC_XDS_BOOTSTRAP``), ``MESHLIB_NODE_ID``, ``MESHLIB_SERVICE``,
        ``MESHLIB_NAMESPACE`` (else ``POD_NAMESPACE``, else ``default``),
        ``MESHLIB_XDS_CACHE`` (path of the persisted configuration),
        ``MESHLIB_XDS_PROTOCOL`` (``auto``, ``delta`` or ``sotw``) and
        ``MESHLIB_RESOLVE_TIMEOUT`` (seconds); for the identity
        ``MESHLIB_SERVICE_ACCOUNT``, ``MESHLIB_TRUST_DOMAIN``, ``MESHLIB_TOKEN_FILE``,
        ``MESHLIB_CERT_DIR`` and ``MESHLIB_CERT_TTL`` (seconds); ``MESHLIB_TELEMETRY``
        (``off`` turns metrics, tracing and access logs off). Keyword arguments
        override them.
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
        for var, arg in (("MESHLIB_SERVICE_ACCOUNT", "service_account"),
                         ("MESHLIB_TRUST_DOMAIN", "trust_domain"),
                         ("MESHLIB_TOKEN_FILE", "token_file"),
                         ("MESHLIB_CERT_DIR", "cert_dir")):
            if env.get(var):
                kwargs[arg] = env[var]
        if env.get("MESHLIB_TELEMETRY", "").lower() in ("off", "0", "false", "no"):
            kwargs["telemetry"] = False
        if env.get("MESHLIB_CERT_TTL"):
            try:
                kwargs["cert_ttl"] = float(env["MESHLIB_CERT_TTL"])
            except ValueError:
                raise MeshError("MESHLIB_CERT_TTL must be a number of seconds, got "
                                f"{env['MESHLIB_CERT_TTL']!r}") from None
        kwargs.update(overrides)
        return cls(**kwargs)

    # ------------------------------------------------------------ channels

    def channel(self, target: str) -> MeshChannel:
        """A ``grpc.Channel`` to ``target`` (``name``, ``name.namespace`` or the FQDN,
        each with an optional ``:port``) running the whole client pipeline."""
        return MeshChannel(self._target(target), self._pool, xds_address=self.xds_address,
                           resolve_timeout=self.resolve_timeout, sleep=self._sleep,
                           telemetry=self._telemetry)

    def aio_channel(self, target: str) -> AioMeshChannel:
        """A ``grpc.aio.Channel`` to ``target``; use it on one event loop."""
        return AioMeshChannel(self._target(target), self._aio_pool,
                              xds_address=self.xds_address,
                              resolve_timeout=self.resolve_timeout,
                              telemetry=self._telemetry)

    def http_client(self, **client_options: Any) -> httpx.Client:
        """An ``httpx.Client`` whose requests to ``http://<service>/...`` run the mesh
        pipeline (routing, balancing, retries of idempotent methods, breakers, mTLS,
        tracing, metrics); ``client_options`` go to ``httpx.Client``."""
        from meshlib._http import MeshTransport

        return httpx.Client(transport=MeshTransport(self), **client_options)

    def async_http_client(self, **client_options: Any) -> httpx.AsyncClient:
        """The ``httpx.AsyncClient`` counterpart of :meth:`http_client`."""
        from meshlib._http import AsyncMeshTransport

        return httpx.AsyncClient(transport=AsyncMeshTransport(self), **client_options)

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
                loop, options=self._channel_options, grace=self._close_grace,
                credentials=self._client_credentials, tracker=self._tracker)
        return pool

    # ------------------------------------------------------------ identity

    def _start_identity(self, service_account: str, trust_domain: str, *,
                        token: str | None, token_file: str | None, cert_dir: str | None,
                        ttl: float | None) -> None:
        started = time.monotonic()
        source: CertificateSource
        if cert_dir is not None:
            files = FileCertificates(cert_dir)
            files.load()  # CertificateError now, not later, if they are missing
            source = files
        else:
            if not service_account:
                raise MeshError("a Mesh with a token needs service= or service_account= "
                                "(its identity is spiffe://<td>/ns/<namespace>/sa/<sa>)")
            identity = SpiffeId(trust_domain, self.namespace, service_account)
            issued = IssuedCertificates(self.xds_address, identity, token=token,
                                        token_file=token_file, ttl=ttl)
            source = issued
            try:
                self._on_loop(issued.fetch).result(timeout=self.resolve_timeout + 1)
            except CertificateError as err:
                if err.code not in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise  # refused: a configuration problem, say so now
                log.warning("no certificate yet (%s); retrying in the background, "
                            "plaintext until then", err)
        self.certificates = source
        self.identity = source.current.spiffe_id if source.current else \
            source.spiffe_id  # type: ignore[attr-defined]
        if source.current is not None:
            self.first_certificate_seconds = time.monotonic() - started
        source.subscribe(self._on_certificate)
        self._on_loop(lambda: self._keep(self._loop.create_task(source.run())))

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._background = task  # a reference, so the task is not collected

    def _on_certificate(self, cert: WorkloadCertificate) -> None:
        credentials = grpc.ssl_channel_credentials(cert.roots_pem, cert.key_pem,
                                                   cert.chain_pem)
        self._client_credentials = credentials
        self._pool.set_credentials(credentials)
        for pool in list(self._aio_pools.values()):
            pool.set_credentials(credentials)

    # ------------------------------------------------------------ telemetry

    @property
    def metrics(self) -> MeshMetrics:
        """This Mesh's metrics: its clients' and servers' golden metrics, and its
        clusters' breakers and ejections (read when scraped)."""
        if self._metrics is None:
            with self._lock:
                if self._metrics is None:
                    self._metrics = MeshMetrics(clusters=self._cluster_states,
                                                source_service=self.service)
        return self._metrics

    def _cluster_states(self) -> list[ClusterState]:
        registry = self._registry
        return registry.states() if registry is not None else []

    def serve_metrics(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve this Mesh's Prometheus metrics at ``http://host:port/metrics`` from a
        daemon thread; returns the port (``port=0``: any free one)."""
        return self.metrics.serve(port, host)

    # ------------------------------------------------------------ servers

    def server(self, service: str | None = None, port: int = 0, *, host: str = "[::]",
               mtls: str | None = None, interceptors: Sequence[Any] = (),
               options: Sequence[tuple[str, Any]] = (), max_workers: int = 16
               ) -> MeshServer:
        """A ``grpc.Server`` on ``host:port`` with the mesh's mTLS and authorization.

        The mTLS mode comes from the control plane (the AccessPolicy of the Service
        owning this address, else MeshConfig), waiting up to ``resolve_timeout`` for
        it; ``mtls=`` forces one. Add servicers as usual, then ``start()``. Handlers
        learn their caller with :func:`meshlib.peer_identity`.
        """
        return self._server(service, port, host=host, mtls=mtls, interceptors=interceptors,
                            options=options, max_workers=max_workers, aio=False)

    def aio_server(self, service: str | None = None, port: int = 0, *, host: str = "[::]",
                   mtls: str | None = None, interceptors: Sequence[Any] = (),
                   options: Sequence[tuple[str, Any]] = ()) -> MeshServer:
        """The ``grpc.aio.Server`` counterpart of :meth:`server` (``await
        server.start()``)."""
        return self._server(service, port, host=host, mtls=mtls, interceptors=interceptors,
                            options=options, max_workers=0, aio=True)

    def server_policy(self, port: int, host: str = "[::]"
                      ) -> tuple[ServerPolicy, Callable[[], None]]:
        """Follow the server Listener of ``host:port``: what the control plane says
        servers there enforce (mTLS mode, authorization, rate limit, tracing, access
        logs), kept current; and the function that stops following it. The HTTP
        middleware and :meth:`server` use it."""
        if self._closed:
            raise MeshError("this Mesh is closed")
        listener_host = "0.0.0.0" if host.strip("[]") in ("::", "", "0.0.0.0") \
            else host.strip("[]")
        policy = ServerPolicy(server_listener_name(listener_host, port))
        cancel: list[Callable[[], None]] = []

        def watch() -> None:
            assert self._client is not None
            cancel.append(self._client.watch(LISTENER, policy.name, WatcherFuncs(
                changed=policy.update, removed=policy.removed)))
        self._on_loop(watch).result()

        def stop_watching() -> None:
            for fn in cancel:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(fn)
        return policy, stop_watching

    def _server(self, service: str | None, port: int, *, host: str, mtls: str | None,
                interceptors: Sequence[Any], options: Sequence[tuple[str, Any]],
                max_workers: int, aio: bool) -> MeshServer:
        if self._closed:
            raise MeshError("this Mesh is closed")
        if port == 0:
            port = _free_port(host)
        policy, stop_watching = self.server_policy(port, host)
        name = policy.name
        mode = mtls
        if mode is None:
            policy.ready.wait(self.resolve_timeout)
            mode = policy.mode
            if mode is None:
                mode = "STRICT" if self.certificates is not None else "DISABLE"
                log.warning("no server Listener %s from the control plane; serving %s",
                            name, mode)
        if mode == "PERMISSIVE" and self.certificates is None:
            log.warning("mTLS mode PERMISSIVE but this Mesh has no identity: serving %s in "
                        "plaintext only", name)
            mode = "DISABLE"
        server, front = build_server(
            mode=mode, source=self.certificates, host=host, port=port,
            interceptors=interceptors, aio=aio,
            options=options, max_workers=max_workers, loop=self._loop)
        return MeshServer(server, front, port=port, mtls_mode=mode, on_stop=stop_watching,
                          policy=policy.check, service=service or self.service,
                          metrics=self.metrics if self._telemetry is not None else None,
                          observe=policy.observability)

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
        return ClusterState(name, on_endpoints=self._endpoints_changed,
                            on_server_name=self._tracker.forget_channels)

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


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host.strip("[]") or "::", 0))
        return int(sock.getsockname()[1])


def _from_bootstrap(path: str) -> tuple[str, str | None]:
    try:
        with open(path) as f:
            data = json.load(f)
        uri = data["xds_servers"][0]["server_uri"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise MeshError(f"GRPC_XDS_BOOTSTRAP={path}: cannot read the xDS server from it: "
                        f"{err}") from err
    return uri.removeprefix("dns:///"), (data.get("node") or {}).get("id")
