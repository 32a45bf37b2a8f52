"""The one error hierarchy of meshlib and its control plane.

::

    MeshError
    ├── ConfigError                 invalid mesh configuration (carries every Problem)
    ├── CertificateError            no workload certificate (the CA's status code if any)
    ├── BindError                   a server cannot listen on its address (also an OSError)
    ├── XdsError                    xDS protocol or resource trouble (type URL, name)
    │   └── InconsistentSnapshotError   RDS/EDS references that do not resolve
    └── CallError                   a call meshlib failed; also a grpc.RpcError
        ├── NoHealthyEndpointError      UNAVAILABLE: no endpoint may take the call
        ├── ServiceNotFoundError        UNAVAILABLE: the target is not in the mesh
        ├── CircuitOpenError            UNAVAILABLE: a circuit breaker or limit refused
        ├── RetryExhaustedError         the last attempt's code: every attempt failed
        ├── DeadlineExceededError       DEADLINE_EXCEEDED: a meshlib timeout fired
        └── RateLimitedError            RESOURCE_EXHAUSTED: over a local rate limit

A :class:`CallError` is a ``grpc.RpcError`` and a ``grpc.Call``-like object with
``code()``, ``details()``, ``initial_metadata()`` and ``trailing_metadata()``, so
existing ``except grpc.RpcError`` code keeps working unchanged.

:class:`MeshError`, :class:`Problem`, :class:`ConfigError`, :class:`CertificateError`,
:class:`BindError`, :class:`XdsError` and :class:`InconsistentSnapshotError` are shared
with the control plane: they are defined in :mod:`meshlib.contract.errors` and re-exported here (the
same classes, so ``except meshlib.MeshError`` catches both sides' errors).
"""

from __future__ import annotations

from typing import Any

import grpc

from meshlib.contract import (
    BindError,
    CertificateError,
    ConfigError,
    InconsistentSnapshotError,
    MeshError,
    Problem,
    XdsError,
)

__all__ = [
    "BindError",
    "CallError",
    "CertificateError",
    "CircuitOpenError",
    "ConfigError",
    "DeadlineExceededError",
    "InconsistentSnapshotError",
    "MeshError",
    "NoHealthyEndpointError",
    "Problem",
    "RateLimitedError",
    "RetryExhaustedError",
    "ServiceNotFoundError",
    "XdsError",
    "status_code",
]


class CallError(MeshError, grpc.RpcError, grpc.Call, grpc.Future):
    """A call meshlib failed; a ``grpc.RpcError`` carrying a status code.

    Like grpc's own errors it is also a finished ``grpc.Call`` and ``grpc.Future``, so
    interceptor chains that treat an error as the call's outcome (``.result()``,
    ``.add_done_callback()``) keep working. ``service`` names the destination (or the
    decorated function) when known.
    """

    code_: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, service: str = "",
                 code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.service = service
        if code is not None:
            self.code_ = code

    def code(self) -> grpc.StatusCode:
        """The gRPC status code callers see."""
        return self.code_

    def details(self) -> str:
        """The message, as ``grpc.RpcError.details()``."""
        return str(self)

    def initial_metadata(self) -> tuple[Any, ...]:
        return ()

    def trailing_metadata(self) -> tuple[Any, ...]:
        return ()

    def debug_error_string(self) -> str:
        return f"{type(self).__name__}: {self}"

    # grpc.Call / grpc.Future of a call that already failed
    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def add_callback(self, callback: Any) -> bool:
        return False

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> Any:
        raise self

    def exception(self, timeout: float | None = None) -> BaseException:
        return self

    def traceback(self, timeout: float | None = None) -> Any:
        return self.__traceback__

    def add_done_callback(self, fn: Any) -> None:
        fn(self)


class NoHealthyEndpointError(CallError):
    """Every endpoint of ``service`` is unhealthy, ejected, or the service has none."""

    code_ = grpc.StatusCode.UNAVAILABLE


class ServiceNotFoundError(CallError):
    """The control plane does not know the target (no such Service in the mesh)."""

    code_ = grpc.StatusCode.UNAVAILABLE


class CircuitOpenError(CallError):
    """A circuit breaker is open (or a max-concurrent-requests limit is reached)."""

    code_ = grpc.StatusCode.UNAVAILABLE


class RetryExhaustedError(CallError):
    """Every attempt failed; ``attempts`` were made and ``last_error`` is the last failure.

    ``code()``, ``details()`` and the metadata are the last attempt's when it was a
    ``grpc.RpcError``, so handlers written for the plain gRPC error keep working.
    """

    def __init__(self, message: str, *, attempts: int, last_error: BaseException,
                 service: str = "") -> None:
        code = last_error.code() if isinstance(last_error, grpc.RpcError) and hasattr(
            last_error, "code") else grpc.StatusCode.UNKNOWN
        super().__init__(message, service=service, code=code)
        self.attempts = attempts
        self.last_error = last_error

    def details(self) -> str:
        last = self.last_error
        if isinstance(last, grpc.RpcError) and hasattr(last, "details"):
            return last.details() or str(self)
        return str(self)

    def initial_metadata(self) -> tuple[Any, ...]:
        last = self.last_error
        return tuple(last.initial_metadata() or ()) if hasattr(last, "initial_metadata") else ()

    def trailing_metadata(self) -> tuple[Any, ...]:
        last = self.last_error
        return tuple(last.trailing_metadata() or ()) if hasattr(
            last, "trailing_metadata") else ()


class DeadlineExceededError(CallError, TimeoutError):
    """A meshlib timeout or propagated deadline expired before the work finished."""

    code_ = grpc.StatusCode.DEADLINE_EXCEEDED


class RateLimitedError(CallError):
    """Over a local rate limit; ``retry_after`` seconds until a token is due."""

    code_ = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after: float, service: str = "") -> None:
        super().__init__(message, service=service)
        self.retry_after = retry_after


def status_code(error: BaseException | None) -> grpc.StatusCode | None:
    """The gRPC status code of a failed call or attempt: its ``code()`` for a
    ``grpc.RpcError`` (``UNKNOWN`` if that is not a status code), else None."""
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        code = error.code()
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    return None
