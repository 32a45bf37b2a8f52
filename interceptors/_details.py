"""Client call details as a frozen dataclass, changed with ``dataclasses.replace``.

grpc hands client interceptors a ``grpc.ClientCallDetails`` (sync: an abstract class
whose concrete type is private; ``grpc.aio``: a namedtuple). Both channels read it by
attribute, so one frozen dataclass serves both.

Example::

    details = details_of(client_call_details)
    continuation(dataclasses.replace(details, timeout=1.0), request)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import grpc

__all__ = ["CallDetails", "details_of", "method_name"]


@dataclass(frozen=True, slots=True)
class CallDetails(grpc.ClientCallDetails):
    """What grpc tells an interceptor about a call (``grpc.ClientCallDetails`` and
    ``grpc.aio.ClientCallDetails``), as a frozen dataclass.

    Example::

        capped = dataclasses.replace(details_of(details), timeout=0.5)
    """

    method: str | bytes
    timeout: float | None = None
    metadata: Any = None
    credentials: grpc.CallCredentials | None = None
    wait_for_ready: bool | None = None
    compression: Any = None

    def _replace(self, **changes: Any) -> CallDetails:
        """``dataclasses.replace``, for interceptors written against grpc.aio's
        namedtuple."""
        return dataclasses.replace(self, **changes)


def details_of(details: grpc.ClientCallDetails) -> CallDetails:
    """A :class:`CallDetails` copy of what grpc handed an interceptor (fields it may
    lack are None)."""
    if isinstance(details, CallDetails):
        return details
    return CallDetails(details.method, details.timeout, details.metadata,
                       details.credentials, getattr(details, "wait_for_ready", None),
                       getattr(details, "compression", None))


def method_name(details: grpc.ClientCallDetails) -> str:
    """The call's method path as text (grpc.aio hands it over as bytes)."""
    method = details.method
    return method.decode() if isinstance(method, bytes) else method
