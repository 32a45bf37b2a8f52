"""gRPC interceptors of meshlib, one concern per class, sync and ``grpc.aio``.

Servers:

* :class:`DeadlineServerInterceptor` / :class:`AioDeadlineServerInterceptor` — handlers
  run with the incoming deadline in force, so mesh calls they make inherit it.
* :class:`AuthorizationInterceptor` / :class:`AioAuthorizationInterceptor` — calls are
  checked against the AccessPolicy rules (RBAC) before their handler runs.

Plain client channels (to services outside the mesh; mesh channels have all of this
built in, without interceptors):

* :class:`DeadlineClientInterceptor` / :class:`AioDeadlineClientInterceptor` — cap each
  call by the deadline in force;
* :class:`RetryClientInterceptor` / :class:`AioRetryClientInterceptor` — retries of
  unary calls under a :class:`meshlib.Retry` policy;
* :class:`CircuitBreakerClientInterceptor` / :class:`AioCircuitBreakerClientInterceptor`
  — a :class:`meshlib.CircuitBreaker`.

:class:`CallDetails` is the frozen dataclass they hand on (``dataclasses.replace``).
grpc.aio applies an interceptor object to the first call kind it implements only
(grpc/grpc#31442): pass aio interceptors through :func:`aio_interceptors`.

Example::

    server = grpc.server(pool, interceptors=[DeadlineServerInterceptor()])
    payments = grpc.intercept_channel(
        grpc.insecure_channel("payments.example.com:443"),
        DeadlineClientInterceptor(),
        RetryClientInterceptor(meshlib.Retry(attempts=3)),
        CircuitBreakerClientInterceptor(meshlib.CircuitBreaker(name="payments")))
    achannel = grpc.aio.insecure_channel(address, interceptors=aio_interceptors(
        AioDeadlineClientInterceptor(), AioRetryClientInterceptor(meshlib.Retry())))
"""

from interceptors._aio import aio_interceptors
from interceptors._breaker import (
    AioCircuitBreakerClientInterceptor,
    CircuitBreakerClientInterceptor,
)
from interceptors._deadline import (
    AioDeadlineClientInterceptor,
    AioDeadlineServerInterceptor,
    DeadlineClientInterceptor,
    DeadlineServerInterceptor,
)
from interceptors._details import CallDetails
from interceptors._retry import AioRetryClientInterceptor, RetryClientInterceptor
from interceptors.authz import AioAuthorizationInterceptor, AuthorizationInterceptor
from interceptors.http import MeshASGIMiddleware, MeshWSGIMiddleware

__all__ = [
    "AioAuthorizationInterceptor",
    "AioCircuitBreakerClientInterceptor",
    "AioDeadlineClientInterceptor",
    "AioDeadlineServerInterceptor",
    "AioRetryClientInterceptor",
    "AuthorizationInterceptor",
    "CallDetails",
    "CircuitBreakerClientInterceptor",
    "DeadlineClientInterceptor",
    "DeadlineServerInterceptor",
    "MeshASGIMiddleware",
    "MeshWSGIMiddleware",
    "RetryClientInterceptor",
    "aio_interceptors",
]
