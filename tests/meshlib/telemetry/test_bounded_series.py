"""Label values a remote caller picks cannot grow the metrics without bound: unknown
HTTP methods and unregistered gRPC methods fold into ``_OTHER``, each kind of series
is capped, and the cap really removes old series from the exposition."""

from __future__ import annotations

import random
import string
from collections import Counter
from wsgiref.util import setup_testing_defaults

import grpc
import pytest

from interceptors.http import MeshWSGIMiddleware
from meshlib.telemetry import MeshMetrics, ServerObserver, _metrics

CALLS = 10_000
OTHER = "_OTHER"  # meshlib.telemetry.OTHER, spelled out: the convention is the contract
rng = random.Random(12)


def _verb() -> str:
    return "".join(rng.choices(string.ascii_uppercase, k=rng.randint(1, 12)))


def _samples(registry) -> Counter[str]:  # type: ignore[no-untyped-def]
    """Samples in the registry's exposition, per metric family."""
    return Counter(metric.name for metric in registry.collect() for _ in metric.samples)


def _labels(registry, family: str, label: str) -> set[str]:  # type: ignore[no-untyped-def]
    return {s.labels[label] for m in registry.collect() if m.name == family
            for s in m.samples if label in s.labels}


def test_random_http_verbs_at_the_server_recorder_fold_into_other():
    metrics = MeshMetrics()
    observer = ServerObserver(metrics, "web", "http")
    for verb in [_verb() for _ in range(CALLS)] + ["GET", "POST"]:
        observer.begin(verb, None, None, {}).end(verb, "200", False, None,
                                                 request_bytes=3, response_bytes=5)
    assert _labels(metrics.registry, "meshlib_server_requests", "method") == {
        "GET", "POST", OTHER}
    assert _labels(metrics.registry, "meshlib_server_request_bytes", "method") == {
        "GET", "POST", OTHER}
    assert sum(_samples(metrics.registry).values()) < 100


def test_random_http_verbs_through_the_wsgi_middleware_make_few_series(mesh_control_plane):
    mesh = mesh_control_plane.mesh("web")

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"ok"]

    wrapped = MeshWSGIMiddleware(app, mesh=mesh, port=18080, host="127.0.0.1")
    for _ in range(CALLS):
        environ: dict[str, object] = {"REQUEST_METHOD": _verb(), "PATH_INFO": "/x"}
        setup_testing_defaults(environ)
        assert b"".join(wrapped(environ, lambda *a: None)) == b"ok"
    samples = _samples(mesh.metrics.registry)
    assert _labels(mesh.metrics.registry, "meshlib_server_requests", "method") <= {
        "GET", OTHER}  # GET: a random draw may spell it
    assert sum(s.value for m in mesh.metrics.registry.collect()
               if m.name == "meshlib_server_requests" for s in m.samples
               if s.name.endswith("_total")) == CALLS
    assert sum(samples.values()) < 100, samples


class _AnyMethod(grpc.GenericRpcHandler):
    """Answers every method name (a catch-all handler, as a proxy or an echo has)."""

    def service(self, handler_call_details):  # type: ignore[no-untyped-def]
        return grpc.unary_unary_rpc_method_handler(lambda request, context: request)


def test_random_grpc_method_names_on_a_mesh_server_make_few_series(mesh, mesh_service):
    echo = mesh_service("echo", _AnyMethod())
    channel = mesh.channel(echo.target)
    for i in range(CALLS):
        method = f"/x{rng.randrange(10**9)}.Y/Z{i}"
        assert channel.unary_unary(method)(b"hi", timeout=5) == b"hi"
    server = echo.mesh.metrics.registry
    assert _labels(server, "meshlib_server_requests", "method") == {OTHER}
    assert _labels(server, "meshlib_server_request_bytes", "method") == {OTHER}
    assert sum(_samples(server).values()) < 100, _samples(server)
    # the client's byte totals per method (the application's names) stop at the cap
    client = _samples(mesh.metrics.registry)
    assert client["meshlib_client_request_bytes"] <= _metrics._MAX_SERIES + 1


def test_registered_grpc_methods_keep_their_names(mesh, mesh_service):
    echo = mesh_service("echo", {"/demo.Echo/Say": lambda request, context: request})
    channel = mesh.channel(echo.target)
    assert channel.unary_unary("/demo.Echo/Say")(b"hi", timeout=5) == b"hi"
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary("/demo.Echo/Nope")(b"hi", timeout=5)
    assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
    server = echo.mesh.metrics.registry
    assert _labels(server, "meshlib_server_requests", "method") == {"/demo.Echo/Say"}


def test_the_series_cap_removes_old_children_from_the_exposition(monkeypatch):
    monkeypatch.setattr(_metrics, "_MAX_SERIES", 8)
    metrics = MeshMetrics()
    for i in range(100):
        metrics.record_server("svc", f"/m.S/M{i}", grpc.StatusCode.OK, "ns/sa", 0.001)
        metrics.record_server("svc", f"/m.S/M{i}", grpc.StatusCode.OK, "ns/other", 0.001)
    methods = _labels(metrics.registry, "meshlib_server_requests", "method")
    assert len(methods) <= 8
    assert "/m.S/M99" in methods and "/m.S/M0" not in methods
    histogram = _labels(metrics.registry, "meshlib_server_request_duration_seconds",
                        "method")
    assert histogram == methods  # no histogram child outlives its counters
    # a series still kept keeps counting into the exposed child
    metrics.record_server("svc", "/m.S/M99", grpc.StatusCode.OK, "ns/sa", 0.001)
    value = metrics.registry.get_sample_value(
        "meshlib_server_requests_total", {"destination_service": "svc", "method": "/m.S/M99",
                                          "code": "OK", "source_identity": "ns/sa"})
    assert value == 2


def test_client_series_and_byte_totals_are_capped(monkeypatch):
    monkeypatch.setattr(_metrics, "_MAX_SERIES", 8)
    metrics = MeshMetrics()
    adders = [metrics.byte_counters("client", "svc", f"/m.S/M{i}") for i in range(100)]
    for on_request, on_response in adders:
        on_request(10)
        on_response(1)
    for i in range(100):
        metrics.record_client("svc", f"route-{i}", "svc", "OK", 0.001, 1)
    samples = _samples(metrics.registry)
    assert samples["meshlib_client_request_bytes"] == 9  # 8 methods and _OTHER
    assert metrics.registry.get_sample_value(
        "meshlib_client_request_bytes_total",
        {"destination_service": OTHER, "method": OTHER}) == 920
    assert samples["meshlib_client_requests"] <= 8


def test_caller_labels_of_another_shape_fold_into_other():
    assert _metrics.caller_label("spiffe://td/ns/a/sa/b") == "a/b"
    assert _metrics.caller_label("spiffe://td/anything/the/caller/wrote") == OTHER
    assert _metrics.caller_label("spiffe://td/x" * 50) == OTHER
