"""Services in the test mesh: real servers on loopback, registered with the control plane.

``mesh_service("reviews", handlers, replicas=2, version="v1")`` starts two gRPC servers
made by :meth:`meshlib.Mesh.server` (so they enforce the AccessPolicy and serve the
mTLS mode the control plane says), and registers them as Kubernetes would: a Service
``reviews`` (every version) and ``reviews-v1`` (this version), each with EndpointSlices
listing the replicas. ``mesh_service.http(...)`` does the same for an ASGI or WSGI app,
wrapped in meshlib's HTTP middleware.
"""

from __future__ import annotations

import inspect
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshlib.contract import DEFAULT_NAMESPACE
from meshlib.testing import config

if TYPE_CHECKING:
    from meshlib import Mesh
    from meshlib.testing._control_plane import MeshControlPlane

__all__ = ["Handlers", "MeshService", "MeshServices", "Replica"]

_ACCOUNT_ANNOTATION = "meshlib.dev/service-account"

#: What a gRPC service is made of: a servicer of generated code (an instance of a
#: subclass of ``ReviewsServicer``: ``add_ReviewsServicer_to_server`` registers it); a
#: ``grpc.GenericRpcHandler``; a mapping of full
#: method names (``/demo.Reviews/Get``) to unary functions of raw bytes
#: (``fn(request: bytes, context) -> bytes``); or a function that registers servicers on
#: the server it is given (``lambda s: add_ReviewsServicer_to_server(Reviews(), s)``).
Handlers = Any


@dataclass
class Replica:
    """One server of a service."""

    name: str
    port: int
    server: Any = field(repr=False)
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """``127.0.0.1:port``."""
        return f"127.0.0.1:{self.port}"

    def count(self) -> None:
        with self._lock:
            self.calls += 1

    def stop(self) -> None:
        """Stop serving (its endpoint stays registered: callers see it fail, as when a
        pod crashes, until :meth:`MeshService.remove` or outlier detection)."""
        if self._stop is not None:
            stop, self._stop = self._stop, None
            stop()


@dataclass
class MeshService:
    """A service running in the test mesh: its replicas and the Mesh they run on."""

    name: str
    namespace: str
    version: str | None
    port: int
    protocol: str
    mesh: Mesh = field(repr=False)
    replicas: list[Replica]
    _services: MeshServices = field(repr=False)
    port_name: str | None = None  # the Service port's name (None: from the protocol)
    _applied: set[tuple[str, str, str]] = field(default_factory=set, repr=False)
    _removed: list[Replica] = field(default_factory=list, repr=False)

    @property
    def calls(self) -> int:
        """Requests that reached any replica, removed ones included (each retry attempt
        counts)."""
        return sum(r.calls for r in (*self.replicas, *self._removed))

    @property
    def backend(self) -> str:
        """The Service name routes use for this version (``reviews-v1``), or the
        service's own name without a version."""
        return f"{self.name}-{self.version}" if self.version else self.name

    @property
    def target(self) -> str:
        """What clients call: ``name.namespace:port``."""
        return f"{self.name}.{self.namespace}:{self.port}"

    def remove(self, replica: Replica) -> None:
        """Take ``replica`` out of the EndpointSlices (and stop it), as a scale-down."""
        replica.stop()
        self.replicas.remove(replica)
        self._removed.append(replica)
        self._services.register(self)

    def stop(self) -> None:
        """Stop every replica (endpoints stay registered)."""
        for replica in self.replicas:
            replica.stop()


class MeshServices:
    """The ``mesh_service`` fixture: start services in the mesh of one control plane;
    all are stopped at teardown."""

    def __init__(self, control_plane: MeshControlPlane) -> None:
        self._cp = control_plane
        self._started: list[MeshService] = []
        self._owned: set[tuple[str, str, str]] = set()  # Services this fixture wrote
        self._lock = threading.Lock()
        control_plane.on_close(self.close)

    def __call__(self, name: str, handlers: Handlers, *, replicas: int = 1,
                 version: str | None = None, namespace: str = DEFAULT_NAMESPACE,
                 port: int = config.DEFAULT_PORT, identity: bool | None = None,
                 service_account: str | None = None, mtls: str | None = None,
                 ) -> MeshService:
        """Serve gRPC service ``name`` with ``replicas`` servers of ``handlers`` and
        register them. ``identity=True`` (the default with a ``tls`` control plane) gets
        the servers a certificate as
        ``service_account`` (default ``name``); ``mtls=`` forces a mode (default: what
        the control plane says). Returns once clients can resolve it."""
        register = _registrar(handlers)
        service = self._service(name, namespace, version, port, "grpc", identity,
                                service_account)
        for i in range(replicas):
            replica = Replica(f"{service.backend}-{i}", _free_port(), None)
            service.replicas.append(replica)
        self.register(service)
        for replica in service.replicas:
            server = service.mesh.server(name, port=replica.port, host="127.0.0.1",
                                         mtls=mtls, interceptors=[_Counter(replica)])
            register(server)
            server.start()
            replica.server = server
            replica._stop = lambda s=server: s.stop(grace=0).wait()
        return service

    def http(self, name: str, app: Any, *, replicas: int = 1, version: str | None = None,
             namespace: str = DEFAULT_NAMESPACE, port: int = 80, protocol: str = "http",
             interface: str = "auto") -> MeshService:
        """Serve an ASGI or WSGI ``app`` (``interface``: ``asgi``, ``wsgi`` or
        ``auto``) as HTTP service ``name``, wrapped in meshlib's middleware
        (AccessPolicy on paths, rate limit, telemetry), in plaintext. ASGI apps run
        on uvicorn (``pip install uvicorn``); WSGI apps on the standard library's
        server."""
        from interceptors.http import MeshASGIMiddleware, MeshWSGIMiddleware

        asgi = _is_asgi(app) if interface == "auto" else interface == "asgi"
        service = self._service(name, namespace, version, port, protocol, None, None)
        for i in range(replicas):
            service.replicas.append(Replica(f"{service.backend}-{i}", _free_port(), None))
        self.register(service)
        for replica in service.replicas:
            wrap = MeshASGIMiddleware if asgi else MeshWSGIMiddleware
            wrapped = wrap(_counting(app, replica, asgi), mesh=service.mesh, port=replica.port,
                           host="127.0.0.1", service=name)
            replica.server, replica._stop = (_serve_asgi if asgi else _serve_wsgi)(
                wrapped, replica.port)
        return service

    def _service(self, name: str, namespace: str, version: str | None, port: int,
                 protocol: str, identity: bool | None,
                 service_account: str | None) -> MeshService:
        """A MeshService and its Mesh. A Service ``name`` the test applied itself is
        kept as it is: its first port, protocol and service account are the ones used."""
        port_name = None
        mine = self._user_service(name, namespace)
        if mine is not None:
            first = (mine.get("spec", {}).get("ports") or [{}])[0]
            port = int(first.get("port", port))
            protocol = first.get("appProtocol") or protocol
            port_name = first.get("name") or None
            annotations = mine.get("metadata", {}).get("annotations") or {}
            service_account = service_account or annotations.get(_ACCOUNT_ANNOTATION)
        account = service_account or name
        mesh = self._cp.mesh(name, identity=identity, namespace=namespace,
                             service_account=account)
        service = MeshService(name, namespace, version, port, protocol, mesh, [], self,
                              port_name)
        with self._lock:
            self._started.append(service)
        return service

    def _user_service(self, name: str, namespace: str) -> dict[str, Any] | None:
        """The Service ``namespace/name`` if the test applied it (not this fixture)."""
        if ("Service", namespace, name) in self._owned:
            return None
        return self._cp.get("Service", name, namespace)

    def register(self, service: MeshService) -> None:
        """(Re)write the Services and EndpointSlices of ``service`` and wait until the
        connected clients have them. Services the test applied itself stay as they are."""
        with self._lock:
            peers = [s for s in self._started
                     if s.name == service.name and s.namespace == service.namespace]
        account = service.mesh.settings.service_account or service.name
        ns, kind = service.namespace, service.protocol
        objects: list[Any] = []
        for name in dict.fromkeys((service.name, service.backend)):
            if self._user_service(name, ns) is None:
                objects.append(config.service(name, namespace=ns, port=service.port,
                                              protocol=kind, service_account=account,
                                              port_name=service.port_name))
                self._owned.add(("Service", ns, name))
        for peer in peers:  # the parent Service's slices, one set per version
            objects += config.endpoints(service.name, [r.address for r in peer.replicas],
                                        namespace=ns, protocol=peer.protocol,
                                        port_name=service.port_name,
                                        name=f"{service.name}.{peer.version or 'all'}")
        if service.version:
            objects += config.endpoints(service.backend, [r.address for r in service.replicas],
                                        namespace=ns, protocol=kind,
                                        port_name=service.port_name)
        keys = self._cp._replace(objects, service._applied)
        service._applied = keys
        self._cp.wait_synced()

    def close(self) -> None:
        """Stop every service started (also done when the control plane closes)."""
        with self._lock:
            started, self._started = self._started, []
        for service in started:
            service.stop()

    def __enter__(self) -> MeshServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Counter:
    """A server interceptor counting the requests a replica gets."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        self._replica.count()
        return continuation(details)


def _registrar(handlers: Handlers) -> Callable[[Any], None]:
    """How to put ``handlers`` on a server."""
    import grpc

    if isinstance(handlers, grpc.GenericRpcHandler):
        return lambda server: server.add_generic_rpc_handlers((handlers,))
    if isinstance(handlers, Mapping):
        by_service: dict[str, dict[str, Any]] = {}
        for full, fn in handlers.items():
            svc, _, method = full.strip("/").rpartition("/")
            if not svc or not method:
                raise ValueError(f"method {full!r}: expected /package.Service/Method")
            by_service.setdefault(svc, {})[method] = grpc.unary_unary_rpc_method_handler(fn)
        generic = tuple(grpc.method_handlers_generic_handler(s, m)
                        for s, m in by_service.items())
        return lambda server: server.add_generic_rpc_handlers(generic)
    add = _generated_adder(handlers)
    if add is not None:
        return lambda server: add(handlers, server)
    if callable(handlers):
        return handlers  # type: ignore[no-any-return]
    raise TypeError("handlers: expected a servicer of generated code, a "
                    "grpc.GenericRpcHandler, a mapping of method names to functions, or a "
                    "function registering servicers on a server")


def _generated_adder(servicer: Any) -> Callable[[Any, Any], None] | None:
    """``add_<Base>Servicer_to_server`` of the generated ``*_pb2_grpc`` module that
    defines a base class of ``servicer`` (the way grpcio's codegen pairs them)."""
    for cls in type(servicer).__mro__:
        module = sys.modules.get(cls.__module__)
        add = getattr(module, f"add_{cls.__name__}_to_server", None)
        if callable(add):
            return add  # type: ignore[no-any-return]
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _is_asgi(app: Any) -> bool:
    call = app if inspect.isfunction(app) else getattr(app, "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(call)


def _counting(app: Any, replica: Replica, asgi: bool) -> Any:
    if asgi:
        async def counted_asgi(scope: Any, receive: Any, send: Any) -> None:
            if scope.get("type") in ("http", "websocket"):
                replica.count()
            await app(scope, receive, send)
        return counted_asgi

    def counted_wsgi(environ: Any, start_response: Any) -> Any:
        replica.count()
        return app(environ, start_response)
    return counted_wsgi


def _serve_wsgi(app: Any, port: int) -> tuple[Any, Callable[[], None]]:
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Threaded(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    server = make_server("127.0.0.1", port, app, server_class=Threaded, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=f"wsgi-{port}",
                              daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)
    return server, stop


def _serve_asgi(app: Any, port: int) -> tuple[Any, Callable[[], None]]:
    try:
        import uvicorn
    except ImportError as err:
        raise RuntimeError("mesh_service.http of an ASGI app needs uvicorn: "
                           "pip install uvicorn") from err
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name=f"asgi-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(5)
    return server, stop
