"""``Mesh``: what an application holds — the xDS connection, its identity, and the
clients and servers that use them.

One Mesh per process is the norm. It is a facade over four parts, each in its own
module: a background event loop on a daemon thread (:mod:`meshlib._loop`) running
meshlib's xDS client, so sync and asyncio code share one control-plane stream; the
workload identity (:mod:`meshlib._identity`); the client side
(:class:`~meshlib._clients.Clients`: targets, routing tables, endpoint channels, the
four drivers of the call pipeline); and the server side
(:class:`~meshlib._server.Servers`). Calls never wait on the loop: they read the
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

import logging
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from meshlib._loop import BackgroundLoop
from meshlib._settings import DEFAULT_RESOLVE_TIMEOUT, MeshSettings, settings_of
from meshlib.contract import MeshError

if TYPE_CHECKING:
    import httpx

    from meshlib._aio_channel import AioMeshChannel
    from meshlib._channel import MeshChannel
    from meshlib._clients import Clients
    from meshlib._identity import Identity
    from meshlib._server import MeshServer, ServerPolicy, Servers
    from meshlib.contract import SpiffeId
    from meshlib.security import CertificateSource, WorkloadCertificate
    from meshlib.telemetry import MeshMetrics
    from meshlib.xds import ChannelTls, XdsClient

__all__ = ["DEFAULT_RESOLVE_TIMEOUT", "Mesh"]

log = logging.getLogger("meshlib")


class Mesh:
    """The mesh as one application sees it.

    Configure it with keyword arguments — the fields of :class:`~meshlib.MeshSettings`
    (``xds_address`` is required; see there for the others) — or with
    ``settings=MeshSettings(...)``, or from the environment with :meth:`from_env`.

    ``channel()``, ``aio_channel()``, ``http_client()`` and ``async_http_client()``
    call services by name through the whole client pipeline; ``server()`` and
    ``aio_server()`` serve with the mesh's mTLS and authorization; :attr:`metrics`
    are its golden metrics (``serve_metrics()`` exposes them).

    Telemetry (``telemetry=True``, the default): every call is counted in
    :attr:`metrics`, traced with OpenTelemetry as MeshConfig samples it and, when
    MeshConfig turns access logs on, logged as a JSON line (docs/telemetry.md).

    Example::

        mesh = meshlib.Mesh(xds_address="127.0.0.1:15010", service="frontend")
        mesh = meshlib.Mesh(settings=meshlib.MeshSettings.from_env(), service="cart")
    """

    def __init__(self, xds_address: str | None = None, *,
                 settings: MeshSettings | None = None, **options: Any) -> None:
        self.settings = settings_of(settings, xds_address, options)
        self._closed = False
        self._metrics: MeshMetrics | None = None  # made by the first server or scrape
        # The machinery a Mesh runs, imported by the first Mesh made (not by
        # ``import meshlib``): the xDS client and its protos, the channel pools; the
        # identity (cryptography) and the server side only when they are used.
        from meshlib._clients import Clients

        self._loop = BackgroundLoop()
        telemetry = None
        if self.settings.telemetry:
            from meshlib.telemetry import ClientTelemetry

            telemetry = ClientTelemetry(self.metrics, self.settings.service)
        self.clients: Clients = Clients(self.settings, self._loop, telemetry)
        """The client side, shared by every channel and HTTP client of this Mesh (the
        seam :class:`~meshlib._http.MeshTransport` takes)."""
        self._xds: XdsClient | None = None
        self._identity: Identity | None = None
        self._servers: Servers | None = None
        self._loop.submit(self._start_xds).result()
        if self.settings.has_identity:
            from meshlib._identity import Identity

            self._identity = Identity()
            try:
                self._identity.start(self.settings, self._loop, self._on_certificate)
            except BaseException:
                self.close()
                raise
            self.clients.certificates = self._identity.certificates
        elif self.settings.ca_root is not None:
            log.warning("ca_root without an identity (token, token_file or cert_dir): the "
                        "xDS channel has no client certificate, and a control plane that "
                        "is not --insecure refuses it")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Mesh:
        """A Mesh configured from the environment (:meth:`MeshSettings.from_env`, which
        lists the ``MESHLIB_*`` variables); keyword arguments override them."""
        return cls(settings=MeshSettings.from_env(environ, **overrides))

    def _start_xds(self) -> None:  # on the loop
        from meshlib.xds import XdsClient, XdsClientConfig

        settings = self.settings
        config: dict[str, Any] = {"server_address": settings.xds_address,
                                  "node_id": self.node_id, "namespace": settings.namespace,
                                  "protocol": settings.xds_protocol}
        if settings.cache_path is not None:
            config["cache_path"] = settings.cache_path
        if settings.ca_root is not None:
            from meshlib.security import read_roots

            read_roots(settings.ca_root)  # a missing or empty root file: say so now
            config["tls"] = self._xds_tls
        self._xds = XdsClient(XdsClientConfig(**config))
        self._xds.start()
        self.clients.attach(self._xds)

    def _xds_tls(self) -> ChannelTls | None:  # on the loop, before each ADS connection
        """The ADS channel's TLS: the pinned roots (read again: a root rotation is a
        file edit) and, once the Mesh has its certificate, the certificate (mTLS: the
        control plane learns who this workload is from it). None: wait for it."""
        from meshlib.security import read_roots

        assert self.settings.ca_root is not None
        roots = read_roots(self.settings.ca_root)
        if not self.settings.has_identity:
            return roots, None, None
        source = self._identity.certificates if self._identity is not None else None
        cert = source.current if source is not None else None
        if cert is None:
            return None
        return roots, cert.key_pem, cert.chain_pem

    def _on_certificate(self, cert: WorkloadCertificate) -> None:
        self.clients.set_certificate(cert)
        xds = self._xds
        if xds is not None:
            self._loop.call_soon(xds.tls_changed)

    # ------------------------------------------------------------ settings, identity

    @property
    def xds_address(self) -> str:
        """The control plane, ``host:port``."""
        return self.settings.xds_address

    @property
    def node_id(self) -> str:
        """The node id the control plane sees."""
        return self.settings.node

    @property
    def service(self) -> str:
        """This workload's service name."""
        return self.settings.service

    @property
    def namespace(self) -> str:
        """Where short targets resolve, and this workload's namespace."""
        return self.settings.namespace

    @property
    def resolve_timeout(self) -> float:
        """How long a first call waits for its target's configuration."""
        return self.settings.resolve_timeout

    @property
    def identity(self) -> SpiffeId | None:
        """This workload's SPIFFE ID (None without an identity)."""
        return self._identity.spiffe_id if self._identity is not None else None

    @property
    def certificates(self) -> CertificateSource | None:
        """The workload certificates (None without an identity)."""
        return self._identity.certificates if self._identity is not None else None

    @property
    def first_certificate_seconds(self) -> float | None:
        """How long the first certificate took at start (None: none yet)."""
        identity = self._identity
        return identity.first_certificate_seconds if identity is not None else None

    # ------------------------------------------------------------ clients

    def channel(self, target: str) -> MeshChannel:
        """A ``grpc.Channel`` to ``target`` (``name``, ``name.namespace`` or the FQDN,
        each with an optional ``:port``) running the whole client pipeline."""
        self._check_open()
        return self.clients.channel(target)

    def aio_channel(self, target: str) -> AioMeshChannel:
        """A ``grpc.aio.Channel`` to ``target``; use it on one event loop."""
        self._check_open()
        return self.clients.aio_channel(target)

    def http_client(self, **client_options: Any) -> httpx.Client:
        """An ``httpx.Client`` whose requests to ``http://<service>/...`` run the mesh
        pipeline (routing, balancing, retries of idempotent methods, breakers, mTLS,
        tracing, metrics); ``client_options`` go to ``httpx.Client``."""
        self._check_open()
        return self.clients.http_client(**client_options)

    def async_http_client(self, **client_options: Any) -> httpx.AsyncClient:
        """The ``httpx.AsyncClient`` counterpart of :meth:`http_client`."""
        self._check_open()
        return self.clients.async_http_client(**client_options)

    def wait_ready(self, target: str, timeout: float | None = None) -> bool:
        """Block until ``target``'s configuration is known; False on timeout or if the
        target is not in the mesh."""
        t = self.clients.target(target)
        t.ready.wait(self.resolve_timeout if timeout is None else timeout)
        return t.table is not None

    # ------------------------------------------------------------ telemetry

    @property
    def metrics(self) -> MeshMetrics:
        """This Mesh's metrics: its clients' and servers' golden metrics, and its
        clusters' breakers and ejections (read when scraped)."""
        if self._metrics is None:
            from meshlib.telemetry import MeshMetrics

            self._metrics = MeshMetrics(clusters=lambda: self.clients.cluster_states(),
                                        source_service=self.settings.service)
        return self._metrics

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
        learn their caller with :func:`meshlib.peer_identity` and its address (also
        behind PERMISSIVE's front) with :func:`meshlib.peer_address`. A port another
        process listens on is never shared: it raises :class:`meshlib.BindError` naming
        the address.
        """
        return self._server_side().server(service or self.service, port, host=host,
                                          mtls=mtls, interceptors=interceptors,
                                          options=options, max_workers=max_workers,
                                          aio=False)

    def aio_server(self, service: str | None = None, port: int = 0, *, host: str = "[::]",
                   mtls: str | None = None, interceptors: Sequence[Any] = (),
                   options: Sequence[tuple[str, Any]] = ()) -> MeshServer:
        """The ``grpc.aio.Server`` counterpart of :meth:`server` (``await
        server.start()``)."""
        return self._server_side().server(service or self.service, port, host=host,
                                          mtls=mtls, interceptors=interceptors,
                                          options=options, max_workers=0, aio=True)

    def server_policy(self, port: int, host: str = "[::]"
                      ) -> tuple[ServerPolicy, Callable[[], None]]:
        """Follow the server Listener of ``host:port``: what the control plane says
        servers there enforce (mTLS mode, authorization, rate limit, tracing, access
        logs), kept current; and the function that stops following it. The HTTP
        middleware and :meth:`server` use it."""
        return self._server_side().policy(port, host)

    def _server_side(self) -> Servers:
        self._check_open()
        if self._servers is None:
            from meshlib._server import Servers  # the first server made imports it

            telemetry = self.settings.telemetry
            self._servers = Servers(self.settings, self._loop, lambda: self._xds,
                                    lambda: self.certificates,
                                    lambda: self.metrics if telemetry else None)
        return self._servers

    # ------------------------------------------------------------ lifecycle

    def _check_open(self) -> None:
        if self._closed:
            raise MeshError("this Mesh is closed")

    def close(self) -> None:
        """Stop the xDS stream and close every endpoint channel (sync ones here;
        ``grpc.aio`` ones need :meth:`aclose` on their loop, or go with it)."""
        if self._closed:
            return
        self._closed = True
        self.clients.closed = True
        if self._servers is not None:
            self._servers.closed = True

        async def shutdown() -> None:
            self.clients.stop_resolving()
            if self._xds is not None:
                await self._xds.close()

        self._loop.stop(shutdown)
        self.clients.close()

    async def aclose(self) -> None:
        """Close this loop's ``grpc.aio`` endpoint channels, then everything else."""
        import asyncio

        await self.clients.aclose()
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
