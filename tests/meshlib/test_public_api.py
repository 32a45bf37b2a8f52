"""The curated public API of meshlib and interceptors: change it on purpose only."""

from __future__ import annotations

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
        "DEFAULT_RESOLVE_TIMEOUT", "AioMeshChannel", "CallError", "CertificateError",
        "CircuitBreaker", "CircuitOpenError", "ConfigError", "DeadlineExceededError",
        "Mesh", "MeshChannel", "MeshError", "MeshServer", "MeshSettings",
        "NoHealthyEndpointError", "RateLimit", "RateLimitedError", "Retry",
        "RetryBudget", "RetryExhaustedError", "ServiceNotFoundError", "SpiffeId",
        "XdsError", "circuit_breaker", "current_deadline", "deadline_scope",
        "peer_identity", "rate_limit", "retry", "timeout",
    ])
    for name in meshlib.__all__:
        assert getattr(meshlib, name).__doc__ or name.startswith("DEFAULT_"), name


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
