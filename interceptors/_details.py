"""Client call details as a frozen dataclass, changed with ``dataclasses.replace``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

__all__ = ["CallDetails", "details_of"]


@dataclass(frozen=True, slots=True)
class CallDetails(grpc.ClientCallDetails):
    """What grpc passes an interceptor about a call (``grpc.ClientCallDetails``)."""

    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: Any


def details_of(details: grpc.ClientCallDetails) -> CallDetails:
    """A :class:`CallDetails` copy of what grpc handed us (fields it may omit: None)."""
    if isinstance(details, CallDetails):
        return details
    return CallDetails(details.method, details.timeout, details.metadata,
                       details.credentials, getattr(details, "wait_for_ready", None),
                       getattr(details, "compression", None))
