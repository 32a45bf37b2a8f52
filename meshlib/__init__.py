"""meshlib: a proxyless service mesh for Python.

Import it, point it at the control plane, and call services by name::

    import meshlib

    mesh = meshlib.Mesh(xds_address="127.0.0.1:15010", service="frontend")
    stub = ReviewsStub(mesh.channel("reviews"))          # a grpc.Channel
    astub = ReviewsStub(mesh.aio_channel("reviews"))     # a grpc.aio.Channel

    @meshlib.retry(attempts=3, on=[grpc.StatusCode.UNAVAILABLE])
    @meshlib.circuit_breaker(failures=5, reset_timeout=30)
    @meshlib.timeout(2.0)
    def get_reviews(...): ...

Routing, load balancing, retries with a budget, circuit breaking, outlier ejection,
deadline propagation and fault injection come from the control plane over xDS.
"""

from meshlib._aio_channel import AioMeshChannel
from meshlib._channel import MeshChannel
from meshlib._deadline import current_deadline, deadline_scope
from meshlib._mesh import DEFAULT_RESOLVE_TIMEOUT, Mesh
from meshlib._server import MeshServer
from meshlib.contract import SpiffeId
from meshlib.errors import (
    CallError,
    CertificateError,
    CircuitOpenError,
    ConfigError,
    DeadlineExceededError,
    InconsistentSnapshotError,
    MeshError,
    NoHealthyEndpointError,
    Problem,
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
    rate_limit,
    retry,
    timeout,
)
from meshlib.security import peer_identity

__all__ = [
    "DEFAULT_RESOLVE_TIMEOUT",
    "AioMeshChannel",
    "CallError",
    "CertificateError",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConfigError",
    "DeadlineExceededError",
    "InconsistentSnapshotError",
    "Mesh",
    "MeshChannel",
    "MeshError",
    "MeshServer",
    "NoHealthyEndpointError",
    "Problem",
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
    "peer_identity",
    "rate_limit",
    "retry",
    "timeout",
]
__version__ = "0.1.0"
