"""meshlib: a proxyless service mesh for Python.

Import it, point it at the control plane, and call services by name::

    import meshlib

    mesh = meshlib.Mesh(xds_address="127.0.0.1:15010", service="frontend")
    stub = ReviewsStub(mesh.channel("reviews"))          # a grpc.Channel
    astub = ReviewsStub(mesh.aio_channel("reviews"))     # a grpc.aio.Channel
    http = mesh.http_client()                            # an httpx.Client

    @meshlib.retry(attempts=3, on=[grpc.StatusCode.UNAVAILABLE])
    @meshlib.circuit_breaker(failures=5, reset_timeout=30)
    @meshlib.timeout(2.0)
    def get_reviews(...): ...

Routing, load balancing, retries with a budget, circuit breaking, outlier ejection,
deadline propagation, fault injection, mTLS and authorization come from the control
plane over xDS.

``__all__`` is what an application uses. Subpackages hold the rest, each with a
public API of its own: :mod:`meshlib.resilience` (policies, decorators, deadlines),
:mod:`meshlib.security` (certificates, peer identity, authorization),
:mod:`meshlib.telemetry` (metrics, tracing, access logs), :mod:`meshlib.xds` (the
xDS client) and :mod:`meshlib.contract` (what the library and the control plane
agree on). Names are imported when first used (:mod:`meshlib._lazy`), so
``import meshlib`` costs a few milliseconds.
"""

from typing import TYPE_CHECKING

from meshlib._lazy import lazy_exports

if TYPE_CHECKING:
    from meshlib._aio_channel import AioMeshChannel
    from meshlib._channel import MeshChannel
    from meshlib._mesh import Mesh
    from meshlib._server import MeshServer
    from meshlib._settings import DEFAULT_RESOLVE_TIMEOUT, MeshSettings
    from meshlib.contract import SpiffeId
    from meshlib.errors import (
        BindError,
        CallError,
        CertificateError,
        CircuitOpenError,
        ConfigError,
        DeadlineExceededError,
        MeshError,
        NoHealthyEndpointError,
        RateLimitedError,
        RetryExhaustedError,
        ServiceNotFoundError,
        XdsError,
    )
    from meshlib.resilience import (
        CircuitBreaker,
        RateLimit,
        Retry,
        RetryBudget,
        circuit_breaker,
        current_deadline,
        deadline_scope,
        rate_limit,
        retry,
        timeout,
    )
    from meshlib.security import peer_address, peer_identity

__all__ = [
    "DEFAULT_RESOLVE_TIMEOUT",
    "AioMeshChannel",
    "BindError",
    "CallError",
    "CertificateError",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConfigError",
    "DeadlineExceededError",
    "Mesh",
    "MeshChannel",
    "MeshError",
    "MeshServer",
    "MeshSettings",
    "NoHealthyEndpointError",
    "RateLimit",
    "RateLimitedError",
    "Retry",
    "RetryBudget",
    "RetryExhaustedError",
    "ServiceNotFoundError",
    "SpiffeId",
    "XdsError",
    "circuit_breaker",
    "current_deadline",
    "deadline_scope",
    "peer_address",
    "peer_identity",
    "rate_limit",
    "retry",
    "timeout",
]
__version__ = "0.1.0"
__getattr__, __dir__ = lazy_exports(__name__, __file__)
