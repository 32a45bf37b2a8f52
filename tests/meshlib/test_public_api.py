"""The curated public API of meshlib and interceptors: change it on purpose only."""

from __future__ import annotations

import grpc

import interceptors
import meshlib


def test_meshlib_public_api_is_pinned():
    assert sorted(meshlib.__all__) == sorted([
        "DEFAULT_RESOLVE_TIMEOUT", "AioMeshChannel", "CallError", "CertificateError",
        "CircuitBreaker", "CircuitOpenError", "ConfigError", "DeadlineExceededError",
        "InconsistentSnapshotError", "Mesh", "MeshChannel", "MeshError", "MeshServer",
        "NoHealthyEndpointError", "Problem", "RateLimit", "RateLimitedError", "Retry",
        "RetryBudget", "RetryExhaustedError", "ServiceNotFoundError", "SpiffeId",
        "XdsError", "circuit_breaker", "current_deadline", "deadline_scope",
        "peer_identity", "rate_limit", "retry", "timeout",
    ])
    for name in meshlib.__all__:
        assert getattr(meshlib, name).__doc__ or name.startswith("DEFAULT_"), name


def test_meshlib_security_public_api_is_pinned():
    import meshlib.security

    assert sorted(meshlib.security.__all__) == sorted([
        "AuthorizationPolicy", "Decision", "WorkloadCertificate", "decode_rbac_filters",
        "peer_identity", "peer_principal", "request_certificate", "write_files",
    ])
    for name in meshlib.security.__all__:
        assert getattr(meshlib.security, name).__doc__, name


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
