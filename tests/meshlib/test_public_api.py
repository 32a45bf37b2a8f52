"""The curated public API of meshlib and interceptors: change it on purpose only."""

from __future__ import annotations

import inspect
import subprocess
import sys

import grpc
import pytest

import interceptors
import meshlib
import meshlib.resilience
import meshlib.security
import meshlib.telemetry


def test_meshlib_public_api_is_pinned():
    assert sorted(meshlib.__all__) == sorted([
        "DEFAULT_RESOLVE_TIMEOUT", "AioMeshChannel", "BindError", "CallError", "CertificateError",
        "CircuitBreaker", "CircuitOpenError", "ConfigError", "DeadlineExceededError",
        "Mesh", "MeshChannel", "MeshError", "MeshServer", "MeshSettings",
        "NoHealthyEndpointError", "RateLimit", "RateLimitedError", "Retry",
        "RetryBudget", "RetryExhaustedError", "ServiceNotFoundError", "SpiffeId",
        "XdsError", "circuit_breaker", "current_deadline", "deadline_scope",
        "peer_address", "peer_identity", "rate_limit", "retry", "timeout",
    ])
    for name in meshlib.__all__:
        assert getattr(meshlib, name).__doc__ or name.startswith("DEFAULT_"), name


def test_meshlib_security_public_api_is_pinned():
    import meshlib.security

    assert sorted(meshlib.security.__all__) == sorted([
        "CA_FILE", "CERT_FILE", "DENIED", "FORWARDED", "HANDLER_FACTORIES", "KEY_FILE", "Admission",
        "AuthorizationPolicy", "CertificateSource", "Check", "Decision", "FileCertificates",
        "IssuedCertificates", "PolicySource", "Refusal", "WorkloadCertificate", "Wrap",
        "authorization_check", "authorize_generic", "authorize_methods",
        "decode_rbac_filters", "guard_handler", "log_denial", "make_key_and_csr",
        "peer_address", "peer_identity", "peer_principal", "read_roots", "request_certificate",
        "rewrap_generic",
        "rewrap_handler", "write_files",
    ])
    for name in meshlib.security.__all__:
        value = getattr(meshlib.security, name)
        if inspect.isclass(value) or inspect.isfunction(value):  # not aliases, constants
            assert value.__doc__, name


def test_meshlib_resilience_and_telemetry_public_apis_are_pinned():
    assert sorted(meshlib.resilience.__all__) == sorted([
        "DEADLINE", "DEFAULT_BACKOFF", "DEFAULT_MAX_BACKOFF", "DEFAULT_MIN_RETRIES_PER_SECOND",
        "DEFAULT_RETRY_ATTEMPTS", "DEFAULT_RETRY_BUDGET_PERCENT", "DEFAULT_RETRY_BUDGET_WINDOW",
        "DEFAULT_RETRY_ON", "FAILURE_CODES", "RETRIES_OWNED", "CircuitBreaker", "Clock",
        "RateLimit", "Retry", "RetryBudget", "RetryRules", "RetryRun", "Sleep",
        "acall_with_retry", "async_sleep", "call_with_retry", "cap_timeout",
        "circuit_breaker", "current_deadline", "deadline_scope", "earliest", "is_failure",
        "rate_limit", "remaining", "reset_deadline", "retry", "run_within", "set_deadline",
        "timeout",
    ])
    assert sorted(meshlib.telemetry.__all__) == sorted([
        "ACCESS_LOG_FIELDS", "DURATION_BUCKETS", "FOLD_AT", "HTTP_METHODS", "OTHER",
        "TRACEPARENT", "CallRecord",
        "ClientTelemetry", "Counted", "Durations", "MeshMetrics", "Observability", "Record",
        "ServerCall", "ServerObserver", "ServerSpan", "Total", "access_logger",
        "caller_label", "code_of", "counting_codec", "format_traceparent",
        "parse_traceparent", "server_wrappers", "start_server_span", "tracer", "w3c_only",
        "write_access_log",
    ])


def test_interceptors_public_api_is_pinned():
    assert sorted(interceptors.__all__) == sorted([
        "AioAuthorizationInterceptor", "AioCircuitBreakerClientInterceptor",
        "AioDeadlineClientInterceptor", "AuthorizationInterceptor",
        "AioDeadlineServerInterceptor", "AioRetryClientInterceptor", "CallDetails",
        "CircuitBreakerClientInterceptor", "DeadlineClientInterceptor",
        "DeadlineServerInterceptor", "MeshASGIMiddleware", "MeshWSGIMiddleware",
        "RetryClientInterceptor", "aio_interceptors",
    ])


def test_call_errors_are_rpc_errors_under_mesh_error():
    for cls in (meshlib.NoHealthyEndpointError, meshlib.CircuitOpenError,
                meshlib.ServiceNotFoundError, meshlib.RetryExhaustedError,
                meshlib.DeadlineExceededError, meshlib.RateLimitedError):
        assert issubclass(cls, meshlib.MeshError) and issubclass(cls, grpc.RpcError)
    assert meshlib.NoHealthyEndpointError("x").code() == grpc.StatusCode.UNAVAILABLE
    assert meshlib.CircuitOpenError("x").code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("package", [meshlib, meshlib.security, meshlib.telemetry,
                                     meshlib.resilience])
def test_every_public_name_resolves_and_is_listed(package):
    for name in package.__all__:
        assert getattr(package, name) is not None, name
        assert name in dir(package), name
    with pytest.raises(AttributeError):
        package.no_such_name  # noqa: B018


def test_import_meshlib_imports_what_a_call_path_needs_only_when_used():
    # A fresh interpreter: what `import meshlib` and `from meshlib import Mesh` pull in.
    code = ("import sys, meshlib; first = set(sys.modules); from meshlib import Mesh; "
            "second = set(sys.modules); "
            "print(sorted(m for m in first if m.split('.')[0] in ('grpc', 'httpx', "
            "'opentelemetry', 'cryptography', 'envoy', 'google'))); "
            "print(sorted(m for m in second if m.startswith(('httpx', "
            "'opentelemetry', 'cryptography', 'envoy', 'prometheus_client', "
            "'meshlib.xds', 'meshlib._channel', 'meshlib._aio_channel', 'meshlib._http'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()
    assert out == ["[]", "[]"], out


def test_a_client_only_mesh_imports_no_server_identity_or_exposition_machinery():
    code = ("import sys, meshlib; mesh = meshlib.Mesh('127.0.0.1:1', resolve_timeout=0.1); "
            "mesh.channel('reviews'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'prometheus_client', "
            "'cryptography', 'httpx'} | {m for m in sys.modules if m in ("
            "'meshlib._server', 'meshlib._identity', 'meshlib._http', "
            "'meshlib._aio_channel')})); "
            "mesh.metrics.registry; print('prometheus_client' in sys.modules); mesh.close()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()
    assert out == ["[]", "True"], out
