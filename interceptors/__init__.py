"""gRPC interceptors of meshlib, one concern per class, sync and ``grpc.aio``.

Servers:

* :class:`DeadlineServerInterceptor` / :class:`AioDeadlineServerInterceptor` — handlers
  run with the incoming deadline in force, so mesh calls they make inherit it.

Plain client channels (to services outside the mesh; mesh channels have all of this
built in, without interceptors):

* :class:`DeadlineClientInterceptor` / :class:`AioDeadlineClientInterceptor` — cap each
  call by the deadline in force;
* :class:`RetryClientInterceptor` / :class:`AioRetryClientInterceptor` — retries under a
  :class:`meshlib.Retry` policy;
* :class:`CircuitBreakerClientInterceptor` / :class:`AioCircuitBreakerClientInterceptor`
  — a :class:`meshlib.CircuitBreaker`.

Example::

    server = grpc.server(pool, interceptors=[DeadlineServerInterceptor()])
"""

from interceptors._deadline import (
    AioDeadlineClientInterceptor,
    AioDeadlineServerInterceptor,
    DeadlineClientInterceptor,
    DeadlineServerInterceptor,
)
from interceptors._details import CallDetails
from interceptors._resilience import (
    AioCircuitBreakerClientInterceptor,
    AioRetryClientInterceptor,
    CircuitBreakerClientInterceptor,
    RetryClientInterceptor,
)

__all__ = [
    "AioCircuitBreakerClientInterceptor",
    "AioDeadlineClientInterceptor",
    "AioDeadlineServerInterceptor",
    "AioRetryClientInterceptor",
    "CallDetails",
    "CircuitBreakerClientInterceptor",
    "DeadlineClientInterceptor",
    "DeadlineServerInterceptor",
    "RetryClientInterceptor",
]
