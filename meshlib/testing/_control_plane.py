"""An in-process control plane for tests: the real one, fed from Python objects.

:class:`MeshControlPlane` runs the control plane ``meshctl control-plane`` runs — the
same validation, translation, snapshot cache, ADS server (state of the world and
delta) and CA — on a background thread, on a free loopback port. Config comes from
the builders of :mod:`meshlib.testing.config`, YAML text or files, and changes live
with :meth:`~MeshControlPlane.apply` and :meth:`~MeshControlPlane.delete`;
:meth:`~MeshControlPlane.wait_synced` returns once every connected client has
acknowledged the result.
"""

from __future__ import annotations

import datetime as dt
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshlib._loop import BackgroundLoop
from meshlib.contract import DEFAULT_NAMESPACE, DEFAULT_TRUST_DOMAIN, ConfigError, SpiffeId

if TYPE_CHECKING:
    from meshlib import Mesh

__all__ = ["DEFAULT_SYNC_TIMEOUT", "MeshCA", "MeshControlPlane", "NotSyncedError"]

DEFAULT_SYNC_TIMEOUT = 10.0  # seconds wait_synced waits by default
_CLUSTER_SCOPED = frozenset({"MeshConfig"})
_SOURCE = "meshlib.testing"


class NotSyncedError(AssertionError):
    """Clients did not acknowledge the current config in time (or rejected it): the
    message names each stream, type and NACK."""


class _Tokens:
    """Bearer tokens the test CA accepts, added at run time (the control plane's
    :class:`~xds_server.ca.TokenAuthenticator` protocol)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._patterns: dict[str, tuple[str, ...]] = {}
        self.seen = 0  # tokens presented (certificate requests that reached the CA)

    def add(self, token: str, pattern: str) -> None:
        with self._lock:
            self._patterns[token] = (*self._patterns.get(token, ()), pattern)

    def authenticate(self, token: str) -> Any:
        from xds_server.ca import AuthenticationError, Caller

        with self._lock:
            self.seen += 1
            patterns = self._patterns.get(token)
        if not patterns:
            raise AuthenticationError("unknown bearer token")
        return Caller(patterns)


class MeshCA:
    """The test control plane's certificate authority (a fresh root per control plane).

    Example::

        token = mesh_ca.token("frontend")              # default/frontend may get a cert
        mesh = meshlib.Mesh(xds_address=..., service="frontend", token=token)
        assert mesh.identity == mesh_ca.identity("frontend")
    """

    def __init__(self, authority: Any, tokens: _Tokens) -> None:
        self._authority = authority
        self._tokens = tokens
        self._directory: tempfile.TemporaryDirectory[str] | None = None

    @property
    def root_file(self) -> Path:
        """The root as a PEM file, as a workload gets it out of band (``ca_root=``)."""
        if self._directory is None:
            self._directory = tempfile.TemporaryDirectory(prefix="meshlib-test-ca-")
            (Path(self._directory.name) / "ca-root.pem").write_bytes(self.root_pem)
        return Path(self._directory.name) / "ca-root.pem"

    def close(self) -> None:
        """Remove :attr:`root_file`."""
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

    @property
    def requests(self) -> int:
        """Certificate requests that reached the CA (each presents a token)."""
        return self._tokens.seen

    @property
    def trust_domain(self) -> str:
        """The trust domain of the identities it signs."""
        return str(self._authority.trust_domain)

    @property
    def root_pem(self) -> bytes:
        """The root certificate (PEM) every workload certificate chains to."""
        return bytes(self._authority.roots_pem())

    def identity(self, service_account: str, namespace: str = DEFAULT_NAMESPACE) -> SpiffeId:
        """The SPIFFE ID a workload running as ``namespace/service_account`` gets."""
        return SpiffeId(self.trust_domain, namespace, service_account)

    def token(self, service_account: str, namespace: str = DEFAULT_NAMESPACE) -> str:
        """A new bearer token the CA accepts for ``namespace/service_account``
        (``*`` for any service account of the namespace)."""
        token = secrets.token_urlsafe(24)
        self._tokens.add(token, f"{namespace}/{service_account}")
        return token


class MeshControlPlane:
    """The control plane, in-process, on ``127.0.0.1`` and a free port.

    Example::

        with MeshControlPlane() as cp:
            cp.apply(config.service("reviews"), config.endpoints("reviews", [addr]))
            mesh = cp.mesh(service="frontend")
            ...
            cp.apply(config.traffic_policy("reviews", timeout="1s"))   # a live edit
            cp.wait_synced()

    The pytest fixture ``mesh_control_plane`` is one of these, closed after the test.
    ``tls=True`` makes it secure as ``meshctl control-plane`` is by default: ADS over
    mTLS on :attr:`xds_address` (clients prove their identity with a mesh certificate;
    the namespace they see is their identity's), the CA over TLS on :attr:`ca_address`,
    both with a serving certificate from :attr:`ca` for ``127.0.0.1`` and
    ``localhost``; the meshes it makes pin :attr:`MeshCA.root_file` and always have an
    identity.
    """

    def __init__(self, *objects: Any, host: str = "127.0.0.1", port: int = 0,
                 trust_domain: str = DEFAULT_TRUST_DOMAIN, tls: bool = False) -> None:
        self._host = host
        self.tls = tls
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._meshes: list[Mesh] = []
        self._mesh_count = 0
        self._closed = False
        self._closers: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._loop = BackgroundLoop("meshlib-test-control-plane")
        tokens = _Tokens()
        try:
            self._cp, self._servers, self.port, self.ca_port, authority = self._loop.submit(
                lambda: self._start(host, port, trust_domain, tokens, tls)).result(timeout=30)
            self._server = self._servers[0]
        except BaseException:
            self._loop.stop(_nothing)
            raise
        self.ca = MeshCA(authority, tokens)
        """The CA behind the certificate service on :attr:`ca_address`."""
        if objects:
            self.apply(*objects)

    async def _start(self, host: str, port: int, trust_domain: str, tokens: _Tokens,
                     tls: bool) -> tuple[Any, list[Any], int, int, Any]:
        from xds_server.ca import CertificateAuthority, CertificateService, ServingCertificates
        from xds_server.control_plane import ControlPlane
        from xds_server.node import NodeGroup
        from xds_server.server import serve, serve_services
        from xds_server.sources.parse import parse_objects

        model, _ = parse_objects([])
        cp = ControlPlane(model)
        cp.snapshot_for(NodeGroup(kind="grpc"))
        authority = CertificateAuthority.create(trust_domain=trust_domain)
        service = CertificateService(
            authority, tokens,
            ttl=lambda: dt.timedelta(seconds=cp.model.mesh_config.certificate_ttl),
            on_result=lambda result: cp.metrics.certificates.labels(result).inc(),
            issue_limit=None)  # a test starts meshes of one identity faster than 1/s
        if not tls:
            server, bound = await serve((host, port), cp.cache, cp.callbacks(),
                                        services=[service])
            return cp, [server], bound, bound, authority
        serving = ServingCertificates(authority, (host, "localhost"))
        server, bound = await serve((host, port), cp.cache, cp.callbacks(),
                                    credentials=serving.credentials(require_client_auth=True),
                                    authenticated=True)
        ca_server, ca_port = await serve_services((host, 0), [service],
                                                  credentials=serving.credentials())
        return cp, [server, ca_server], bound, ca_port, authority

    # ------------------------------------------------------------------ config

    @property
    def xds_address(self) -> str:
        """``host:port`` of ADS (and, without ``tls``, the CA), for
        ``Mesh(xds_address=...)`` and ``meshctl bootstrap``."""
        return f"{self._host}:{self.port}"

    @property
    def ca_address(self) -> str:
        """``host:port`` of the certificate service (:attr:`xds_address` without
        ``tls``), for ``Mesh(ca_address=...)`` and ``meshctl certs issue``."""
        return f"{self._host}:{self.ca_port}"

    @property
    def model(self) -> Any:
        """The :class:`~xds_server.model.MeshModel` being served."""
        return self._cp.model

    @property
    def objects(self) -> list[dict[str, Any]]:
        """The objects being served, in the order they were first applied."""
        with self._lock:
            return [dict(obj) for obj in self._objects.values()]

    def get(self, kind: str, name: str, namespace: str = DEFAULT_NAMESPACE
            ) -> dict[str, Any] | None:
        """The object being served of ``kind``/``namespace``/``name``, or None."""
        with self._lock:
            obj = self._objects.get(_key_of(kind, name, namespace))
            return None if obj is None else dict(obj)

    def apply(self, *objects: Any) -> None:
        """Create or replace objects, as ``kubectl apply`` does, and serve the result.

        Takes objects (dicts, as :mod:`meshlib.testing.config` builds them), lists of
        them, YAML text, or a :class:`~pathlib.Path` to a YAML file or directory.
        Raises :class:`~meshlib.contract.ConfigError` (one line per problem, naming the
        object and field) and serves nothing new if the result is invalid.
        """
        self._replace(_documents(objects), ())

    def _replace(self, objects: Iterable[Any], stale: Iterable[tuple[str, str, str]]
                 ) -> set[tuple[str, str, str]]:
        """Apply ``objects`` and delete those of ``stale`` keys not among them, in one
        change; returns the keys of ``objects``."""
        incoming = {_key(obj): obj for obj in _documents(objects)}
        with self._lock:
            updated = {k: v for k, v in self._objects.items()
                       if k not in stale or k in incoming}
            updated.update(incoming)
            self._serve(updated)
        return set(incoming)

    def delete(self, kind: str, name: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Delete one object (KeyError if it is not being served)."""
        key = _key_of(kind, name, namespace)
        with self._lock:
            if key not in self._objects:
                raise KeyError(f"no {kind} {namespace}/{name} is being served")
            updated = {k: v for k, v in self._objects.items() if k != key}
            self._serve(updated)

    def _serve(self, objects: dict[tuple[str, str, str], dict[str, Any]]) -> None:
        from xds_server.sources.parse import parse_objects

        model, problems = parse_objects([(_SOURCE, obj) for obj in objects.values()])
        if problems:
            raise ConfigError(problems)
        self._loop.submit(lambda: self._cp.apply(model)).result(timeout=30)
        self._objects = objects

    # ------------------------------------------------------------------ clients

    def wait_synced(self, timeout: float = DEFAULT_SYNC_TIMEOUT) -> None:
        """Wait until every connected client has acknowledged the config being served
        for everything it subscribes to. Raises :class:`NotSyncedError` on timeout,
        naming what is behind and any NACK."""
        ads = self._server.ads

        def synced() -> bool:
            return not _behind(ads.registry.streams(), self._cp.cache)

        async def wait() -> bool:
            return bool(await ads.registry.wait_for(synced, timeout=timeout))

        if not self._loop.submit(wait).result(timeout=timeout + 5):
            lagging = self._loop.submit(
                lambda: _behind(ads.registry.streams(), self._cp.cache)).result(timeout=5)
            detail = "\n  ".join(lagging)
            raise NotSyncedError(f"clients not in sync after {timeout:.1f} s:\n  {detail}")

    def clients(self) -> list[str]:
        """Node ids of the connected clients (one per open ADS stream)."""
        ads = self._server.ads
        return self._loop.submit(
            lambda: [s.node_id for s in ads.registry.streams()]).result(timeout=5)

    def mesh(self, service: str = "test-client", *, identity: bool | None = None,
             namespace: str = DEFAULT_NAMESPACE, **settings: Any) -> Mesh:
        """A :class:`~meshlib.Mesh` connected to this control plane, closed with it.

        ``identity=True`` gets it a certificate from :attr:`ca` (service account
        ``service``, or ``service_account=``), so it speaks mTLS and servers see who
        it is; it is the default (and required) with ``tls``, whose xDS port admits
        only workloads with an identity. ``settings`` are :class:`~meshlib.MeshSettings`
        fields.
        """
        if identity is None:
            identity = self.tls
        import meshlib

        with self._lock:
            self._mesh_count += 1
            count = self._mesh_count
        settings.setdefault("node_id", f"{service}-{count}")
        settings.setdefault("close_grace", 0.5)
        settings.setdefault("resolve_timeout", 5.0)
        if self.tls:
            settings.setdefault("ca_root", str(self.ca.root_file))
            settings.setdefault("ca_address", self.ca_address)
        if identity and "token" not in settings:
            account = settings.get("service_account") or service
            settings["token"] = self.ca.token(account, namespace)
        mesh = meshlib.Mesh(xds_address=self.xds_address, service=service,
                            namespace=namespace, trust_domain=self.ca.trust_domain,
                            **settings)
        with self._lock:
            self._meshes.append(mesh)
        return mesh

    # ------------------------------------------------------------------ lifecycle

    def on_close(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` first thing in :meth:`close` (services stop before their meshes)."""
        self._closers.append(fn)

    def close(self) -> None:
        """Stop what registered :meth:`on_close`, close the meshes it made, then stop
        serving."""
        if self._closed:
            return
        self._closed = True
        for fn in reversed(self._closers):
            fn()
        for mesh in self._meshes:
            mesh.close()
        servers = self._servers

        async def shutdown() -> None:
            for server in servers:
                await server.stop(grace=0.2)

        self._loop.stop(shutdown)
        self.ca.close()

    def __enter__(self) -> MeshControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _nothing() -> None:
    return None


def _key_of(kind: str, name: str, namespace: str | None) -> tuple[str, str, str]:
    return (kind, "" if kind in _CLUSTER_SCOPED else (namespace or DEFAULT_NAMESPACE), name)


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    return _key_of(str(obj.get("kind", "")), str(meta.get("name", "")),
                   meta.get("namespace"))


def _documents(items: Iterable[Any]) -> list[dict[str, Any]]:
    """Objects from dicts, lists, YAML text and paths, in order."""
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Path):
            from xds_server.sources.yaml_loader import load_documents

            out += [dict(doc) for _, doc in load_documents(item)]
        elif isinstance(item, str):
            import yaml

            out += [dict(doc) for doc in yaml.safe_load_all(item) if doc]
        elif isinstance(item, Mapping):
            out.append(dict(item))
        elif isinstance(item, Iterable):
            out += _documents(item)
        else:
            raise TypeError(f"cannot apply {type(item).__name__}: give objects (dicts), "
                            "lists of them, YAML text or a Path")
    return out


def _behind(streams: Iterable[Any], cache: Any) -> list[str]:
    """One line per stream and type whose client is not in step with the config: not
    yet sent, not yet acknowledged (or NACKed), or not yet subscribed to a resource
    that what it holds references (a route's new cluster, a cluster's endpoints)."""
    from xds_server.cache.consistency import referenced_names

    lines = []
    for stream in streams:
        snapshot = cache.get_snapshot(stream.group) if stream.group else None
        if snapshot is None:
            continue
        held: dict[str, dict[str, Any]] = {}
        for type_url, status in stream.types.items():
            by_name = snapshot.of_type(type_url)
            names = by_name.keys() if status.wildcard else status.names
            expected = {n: by_name[n] for n in names if n in by_name}
            sent = {n: v for n, v in status.resources.items() if v}
            short = type_url.rsplit(".", 1)[-1]
            if sent != {n: r.version for n, r in expected.items()}:
                lines.append(f"{stream.node_id}: {short} not sent yet")
            elif status.acked_version != status.sent_version:
                why = f" (NACK: {status.last_nack})" if status.last_nack else ""
                lines.append(f"{stream.node_id}: {short} not acknowledged{why}")
            held[type_url] = expected
        for type_url, wanted in referenced_names(held).items():
            status = stream.types.get(type_url)
            subscribed = set() if status is None else set(status.names)
            if (status is None or not status.wildcard) and wanted - subscribed:
                short = type_url.rsplit(".", 1)[-1]
                lines.append(f"{stream.node_id}: {short} {sorted(wanted - subscribed)} "
                             "not subscribed yet")
    return lines
