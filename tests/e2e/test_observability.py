"""Observability and HTTP end to end: the real control plane process, real uvicorn and
WSGI servers, real gRPC servers, meshlib clients over loopback.

* one trace across three services (HTTP → gRPC → gRPC) with the retry visible;
* /metrics scraped and parsed, counts matching the traffic;
* access-log lines parsing as JSON with the documented fields;
* the httpx client's canary split and retries;
* authorization and the rate limit in the ASGI and WSGI middleware.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import grpc
import pytest
import uvicorn
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import meshlib
from interceptors.http import MeshASGIMiddleware, MeshWSGIMiddleware
from meshlib.telemetry._access_log import ACCESS_LOG_FIELDS
from tests.e2e.conftest import free_port
from tests.e2e.mesh_files import service_yaml

GET = "/demo.Store/Get"
_EXPORTER = InMemorySpanExporter()


def _raw(b: bytes) -> bytes:
    return b


@pytest.fixture(scope="module", autouse=True)
def _tracer_provider() -> None:
    # The global provider is set once per process: join it if another module set it.
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))


@pytest.fixture
def spans() -> InMemorySpanExporter:
    _EXPORTER.clear()
    return _EXPORTER


def http_service(name: str, port: int) -> str:
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: http, appProtocol: http}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-0, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP, appProtocol: http}}]
endpoints:
  - addresses: ["127.0.0.1"]
    conditions: {{ready: true}}
"""


def mesh_config(sampling: float = 1.0, access_logs: bool = True) -> str:
    return f"""---
apiVersion: meshlib.dev/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  tracing: {{sampling: {sampling}}}
  accessLogs: {{enabled: {str(access_logs).lower()}}}
"""


def retries(service: str, extra: str = "") -> str:
    return f"""---
apiVersion: meshlib.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: {service}, namespace: default}}
spec:
  targetRef: {{kind: Service, name: {service}}}
  retries:
    attempts: 3
    retryOn: [UNAVAILABLE]
    backoff: {{baseInterval: 10ms, maxInterval: 50ms}}
{extra}"""


class Servers:
    """Servers started by a test, stopped after it."""

    def __init__(self) -> None:
        self.stops: list = []

    def uvicorn(self, app, port: int) -> None:  # type: ignore[no-untyped-def]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started

        def stop() -> None:
            server.should_exit = True
            thread.join(5)
        self.stops.append(stop)

    def wsgi(self, app, port: int) -> None:  # type: ignore[no-untyped-def]
        class Quiet(WSGIRequestHandler):
            def log_message(self, *args: object) -> None:
                pass
        server = make_server("127.0.0.1", port, app, handler_class=Quiet)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)
        self.stops.append(stop)

    def grpc(self, mesh: meshlib.Mesh, service: str, port: int, handler) -> None:  # type: ignore[no-untyped-def]
        server = mesh.server(service, port=port, host="127.0.0.1")
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            GET.split("/")[1], {"Get": grpc.unary_unary_rpc_method_handler(
                handler, _raw, _raw)}),))
        server.start()
        self.stops.append(lambda: server.stop(None))


@pytest.fixture
def world(tmp_path: Path, control_plane_factory) -> Iterator:
    servers = Servers()
    meshes: list[meshlib.Mesh] = []

    def start(yaml: str):  # type: ignore[no-untyped-def]
        directory = tmp_path / "mesh"
        directory.mkdir(exist_ok=True)
        (directory / "mesh.yaml").write_text(yaml)
        cp = control_plane_factory(directory)

        def mesh(service: str) -> meshlib.Mesh:
            made = meshlib.Mesh(cp.xds_address, service=service)
            meshes.append(made)
            return made
        return mesh

    yield start, servers
    for stop in reversed(servers.stops):
        stop()
    for mesh in meshes:
        mesh.close()


def scrape(mesh: meshlib.Mesh) -> dict[tuple[str, tuple], float]:
    port = mesh.serve_metrics(0)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_one_trace_spans_http_grpc_grpc_with_the_retry_visible(world, spans, capsys):
    start, servers = world
    web_port, api_port, store_port = free_port(), free_port(), free_port()
    mesh = start(http_service("web", web_port) + service_yaml("api", [api_port])
                 + service_yaml("store", [store_port]) + retries("store") + mesh_config())
    store_calls = []

    def store(request: bytes, context: grpc.ServicerContext) -> bytes:
        store_calls.append(1)
        if len(store_calls) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return b"stock:" + request

    api_mesh, store_mesh, web_mesh = mesh("api"), mesh("store"), mesh("web")
    servers.grpc(store_mesh, "store", store_port, store)
    store_stub = api_mesh.channel("store").unary_unary(GET, _raw, _raw)
    servers.grpc(api_mesh, "api", api_port,
                 lambda request, context: b"api+" + store_stub(request, timeout=5))
    api_stub = web_mesh.aio_channel("api").unary_unary(GET, _raw, _raw)

    async def page(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse((await api_stub(b"42", timeout=5)).decode())

    app = Starlette(routes=[Route("/page", page)])
    app.add_middleware(MeshASGIMiddleware, mesh=web_mesh, port=web_port, host="127.0.0.1")
    servers.uvicorn(app, web_port)

    client_mesh = mesh("frontend")
    with client_mesh.http_client() as http:
        response = http.get("http://web/page", timeout=10)
    assert response.status_code == 200
    assert response.text == "api+stock:42"
    assert len(store_calls) == 2

    # 11 spans; the web server's own ends last, after its response has gone out.
    deadline = time.monotonic() + 5
    while len(spans.get_finished_spans()) < 11 and time.monotonic() < deadline:
        time.sleep(0.05)
    finished = spans.get_finished_spans()
    names = Counter(s.name for s in finished)
    assert names == {"GET": 2, "Attempt GET": 1, "Sent.demo.Store/Get": 2,
                     "Attempt.demo.Store/Get": 3, "Recv.demo.Store/Get": 3}, names
    assert len({s.context.trace_id for s in finished}) == 1  # one trace
    by_id = {s.context.span_id: s for s in finished}

    def parent(span):  # type: ignore[no-untyped-def]
        return by_id[span.parent.span_id] if span.parent else None

    root = [s for s in finished if s.parent is None]
    assert [(s.name, s.kind) for s in root] == [("GET", trace.SpanKind.CLIENT)]
    server_web = next(s for s in finished if s.name == "GET" and s.kind == trace.SpanKind.SERVER)
    assert parent(server_web).name == "Attempt GET"
    store_attempts = sorted((s for s in finished if s.name == "Attempt.demo.Store/Get"
                             and parent(parent(s)).name == "Recv.demo.Store/Get"),
                            key=lambda s: s.attributes["meshlib.attempt"])
    assert [a.attributes["meshlib.attempt"] for a in store_attempts] == [1, 2]
    assert [a.attributes["meshlib.outcome"] for a in store_attempts] == ["UNAVAILABLE", "OK"]
    assert all(a.attributes["server.address"] == f"127.0.0.1:{store_port}"
               for a in store_attempts)
    # each store server span is the child of one attempt
    store_servers = [s for s in finished if s.name == "Recv.demo.Store/Get"
                     and parent(s) in store_attempts]
    assert len(store_servers) == 2

    # access logs: one JSON line per call and side, with the documented fields
    lines = [json.loads(text) for text in capsys.readouterr().out.splitlines()
             if text.startswith('{"time"')]  # what meshlib wrote to stdout
    assert all(list(line) == list(ACCESS_LOG_FIELDS) for line in lines)
    kinds = Counter((line["kind"], line["protocol"]) for line in lines)
    assert kinds == {("client", "http"): 1, ("server", "http"): 1, ("client", "grpc"): 2,
                     ("server", "grpc"): 3}, kinds
    store_client = next(line for line in lines if line["kind"] == "client"
                        and line["destination_service"] == "store")
    assert store_client["attempts"] == 2 and store_client["code"] == "OK"
    assert store_client["upstream"] == f"127.0.0.1:{store_port}"
    assert {line["trace_id"] for line in lines} == {f"{root[0].context.trace_id:032x}"}


def test_metrics_count_the_traffic_sent(world):
    start, servers = world
    port = free_port()
    mesh = start(service_yaml("store", [port]) + retries("store") + mesh_config(0.0, False))
    calls = []

    def store(request: bytes, context: grpc.ServicerContext) -> bytes:
        calls.append(request)
        if request == b"missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such item")
        if request == b"flaky" and calls.count(b"flaky") == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return b"ok"

    server_mesh, client_mesh = mesh("store"), mesh("frontend")
    servers.grpc(server_mesh, "store", port, store)
    stub = client_mesh.channel("store").unary_unary(GET, _raw, _raw)
    for _ in range(7):
        stub(b"item", timeout=5)
    for _ in range(2):
        with pytest.raises(grpc.RpcError):
            stub(b"missing", timeout=5)
    stub(b"flaky", timeout=5)  # one retry

    client = scrape(client_mesh)
    labels = (("backend", f"store.default:{50051}"), ("destination_service", "store"),
              ("route", "default"))

    def count(name: str, code: str | None, source: bool = True) -> float:
        key = dict(labels)
        if code is not None:
            key["code"] = code
        if source:
            key["source_service"] = "frontend"
        return client.get((name, tuple(sorted(key.items()))), 0.0)

    assert count("meshlib_client_requests_total", "OK") == 8
    assert count("meshlib_client_requests_total", "NOT_FOUND") == 2
    assert count("meshlib_client_retries_total", None, source=False) == 1
    assert count("meshlib_client_request_duration_seconds_count", "OK", source=False) == 8
    sent = client[("meshlib_client_request_bytes_total",
                   (("destination_service", "store"), ("method", GET)))]
    assert sent == 7 * 4 + 2 * 7 + 2 * 5  # every attempt's serialized request
    assert client[("meshlib_client_endpoints", (("backend", "store.default:50051"),))] == 1
    assert client[("meshlib_client_circuit_breakers_open",
                   (("backend", "store.default:50051"),))] == 0

    server = scrape(server_mesh)

    def served(code: str) -> float:
        return server.get(("meshlib_server_requests_total", (
            ("code", code), ("destination_service", "store"), ("method", GET),
            ("source_identity", "unknown"))), 0.0)
    assert (served("OK"), served("NOT_FOUND"), served("UNAVAILABLE")) == (8, 2, 1)


def _canary_world(start, servers, hits: Counter, fail_first: bool) -> meshlib.Mesh:  # type: ignore[no-untyped-def]
    stable, canary = free_port(), free_port()
    mesh = start(http_service("shop", stable) + http_service("shop-canary", canary)
                 + http_service("shop-stable", stable) + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop-split, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: shop}]
  rules:
  - backendRefs:
    - {name: shop-stable, port: 80, weight: 80}
    - {name: shop-canary, port: 80, weight: 20}
""" + retries("shop") + mesh_config(0.0, False))
    failed = set()

    def app(name: str):  # type: ignore[no-untyped-def]
        async def handle(request):  # type: ignore[no-untyped-def]
            hits[name] += 1
            key = request.query_params.get("k", "")
            if fail_first and key not in failed:
                failed.add(key)
                return PlainTextResponse("busy", status_code=503)
            return PlainTextResponse(name)
        return Starlette(routes=[Route("/item", handle, methods=["GET", "POST"])])

    servers.uvicorn(app("stable"), stable)
    servers.uvicorn(app("canary"), canary)
    return mesh("frontend")


def test_httpx_client_splits_by_weight(world):
    start, servers = world
    hits: Counter = Counter()
    client_mesh = _canary_world(start, servers, hits, fail_first=False)
    with client_mesh.http_client() as http:
        bodies = Counter(http.get("http://shop/item", timeout=5).text for _ in range(400))
    assert bodies == hits
    assert 0.12 < bodies["canary"] / 400 < 0.28, bodies  # 20 % ± sampling noise


async def test_async_httpx_client_retries_idempotent_requests_only(world):
    start, servers = world
    hits: Counter = Counter()
    client_mesh = _canary_world(start, servers, hits, fail_first=True)
    async with client_mesh.async_http_client() as http:
        response = await http.get("http://shop/item?k=a", timeout=5)
        assert response.status_code == 200  # the 503 was retried
        assert sum(hits.values()) == 2
        posted = await http.post("http://shop/item?k=b", timeout=5)
        assert posted.status_code == 503  # POST is not idempotent: not retried
        assert sum(hits.values()) == 3
    client = scrape(client_mesh)
    retried = sum(v for (name, _), v in client.items() if name == "meshlib_client_retries_total")
    assert retried == 1


def test_sync_httpx_client_retries_and_returns_the_last_response(world):
    start, servers = world
    hits: Counter = Counter()
    client_mesh = _canary_world(start, servers, hits, fail_first=True)
    with client_mesh.http_client() as http:
        assert http.get("http://shop/item?k=x", timeout=5).status_code == 200
        assert sum(hits.values()) == 2


POLICY = """---
apiVersion: meshlib.dev/v1alpha1
kind: AccessPolicy
metadata: {name: guarded, namespace: default}
spec:
  targetRef: {kind: Service, name: guarded}
  mtls: {mode: DISABLE}
  rules:
  - action: DENY
    to: [{paths: ["/admin/*"]}]
  - action: ALLOW
    from: [{serviceAccounts: [default/frontend]}]
"""
XFCC = "By=spiffe://cluster.local/ns/default/sa/guarded;URI=spiffe://cluster.local/ns/default/sa/"


def _guarded_mesh(start, port: int, rate: str = "") -> meshlib.Mesh:  # type: ignore[no-untyped-def]
    extra = "" if not rate else f"""---
apiVersion: meshlib.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: guarded, namespace: default}}
spec:
  targetRef: {{kind: Service, name: guarded}}
  rateLimit: {rate}
"""
    return start(http_service("guarded", port) + POLICY + extra + mesh_config(0.0, False))(
        "guarded")


def _get(port: int, path: str, who: str | None) -> tuple[int, dict, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if who:
        request.add_header("x-forwarded-client-cert", XFCC + who)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def _flask_app():  # type: ignore[no-untyped-def]
    from flask import Flask

    app = Flask("guarded")

    @app.get("/<path:path>")
    def anything(path: str) -> str:
        return f"hello {path}"
    return app


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_middleware_enforces_access_policy(world, kind):
    start, servers = world
    port = free_port()
    guarded = _guarded_mesh(start, port)
    if kind == "asgi":
        async def hello(request):  # type: ignore[no-untyped-def]
            return PlainTextResponse(f"hello {request.path_params['path']}")
        app = Starlette(routes=[Route("/{path:path}", hello)])
        servers.uvicorn(MeshASGIMiddleware(app, mesh=guarded, port=port,
                                           trust_forwarded_identity=True), port)
    else:
        flask_app = _flask_app()
        flask_app.wsgi_app = MeshWSGIMiddleware(flask_app.wsgi_app, mesh=guarded, port=port,
                                                trust_forwarded_identity=True)
        servers.wsgi(flask_app, port)
    assert _get(port, "/books", "frontend")[::2] == (200, "hello books")
    assert _get(port, "/books", "intruder")[::2] == (403, "permission denied")
    assert _get(port, "/books", None)[::2] == (403, "permission denied")
    assert _get(port, "/admin/keys", "frontend")[::2] == (403, "permission denied")
    server = scrape(guarded)
    denied = server[("meshlib_server_requests_total", (
        ("code", "403"), ("destination_service", "guarded"), ("method", "GET"),
        ("source_identity", "default/intruder")))]
    assert denied == 1


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_middleware_rate_limits_per_caller(world, kind):
    start, servers = world
    port = free_port()
    guarded = _guarded_mesh(start, port, rate="{requestsPerSecond: 0.5, burst: 2}")
    app: object
    if kind == "asgi":
        async def hello(request):  # type: ignore[no-untyped-def]
            return PlainTextResponse("hello")
        app = MeshASGIMiddleware(Starlette(routes=[Route("/{p:path}", hello)]), mesh=guarded,
                                 port=port, trust_forwarded_identity=True)
        servers.uvicorn(app, port)
    else:
        flask_app = _flask_app()
        flask_app.wsgi_app = MeshWSGIMiddleware(flask_app.wsgi_app, mesh=guarded, port=port,
                                                trust_forwarded_identity=True)
        servers.wsgi(flask_app, port)
    assert [_get(port, "/x", "frontend")[0] for _ in range(2)] == [200, 200]
    status, headers, body = _get(port, "/x", "frontend")
    assert status == 429
    assert headers["retry-after"] == "2"  # one token per 2 s
    assert body.startswith("rate limited: retry in")


def test_a_plain_server_with_opentelemetry_instrumentation_grpc_joins_the_trace(world, spans):
    """Servers that are not meshlib's use opentelemetry-instrumentation-grpc; its server
    span continues meshlib's attempt span (the same W3C traceparent)."""
    from concurrent import futures

    from opentelemetry.instrumentation.grpc import server_interceptor

    start, servers = world
    port = free_port()
    mesh = start(service_yaml("store", [port]) + mesh_config(1.0, False))
    plain = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                        interceptors=[server_interceptor()])
    plain.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "demo.Store", {"Get": grpc.unary_unary_rpc_method_handler(
            lambda request, context: b"plain", _raw, _raw)}),))
    plain.add_insecure_port(f"127.0.0.1:{port}")
    plain.start()
    servers.stops.append(lambda: plain.stop(None))
    stub = mesh("frontend").channel("store").unary_unary(GET, _raw, _raw)
    assert stub(b"", timeout=5) == b"plain"
    finished = spans.get_finished_spans()
    attempt = next(s for s in finished if s.name == "Attempt.demo.Store/Get")
    served = next(s for s in finished if s.kind == trace.SpanKind.SERVER)
    assert served.parent.span_id == attempt.context.span_id
    assert served.context.trace_id == attempt.context.trace_id


def _example(name: str):  # type: ignore[no-untyped-def]
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "examples" / "http" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_flask_example_calls_the_starlette_example_through_the_mesh(world):
    start, servers = world
    reviews_port, products_port = free_port(), free_port()
    mesh = start(http_service("reviews-http", reviews_port)
                 + http_service("products", products_port) + mesh_config(0.0, False))
    reviews = _example("starlette_app").make_app("reviews-http-0")
    reviews.add_middleware(MeshASGIMiddleware, mesh=mesh("reviews-http"), port=reviews_port)
    servers.uvicorn(reviews, reviews_port)
    servers.wsgi(_example("flask_app").make_app(mesh("products"), products_port),
                 products_port)
    status, _, body = _get(products_port, "/products/7", None)
    assert status == 200
    assert json.loads(body) == {"id": 7, "reviews": {"id": "7", "stars": 5,
                                                     "served_by": "reviews-http-0"}}
