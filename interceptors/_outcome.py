"""What a sync client interceptor's continuation returns, made safe to use.

grpc's sync unary-unary continuation catches a ``grpc.RpcError`` raised further down the
chain and *returns* it as the call's outcome, assuming every RpcError is also a
``grpc.Future`` (grpc's own are). An error raised by an inner interceptor or a mesh
channel (a :class:`meshlib.CallError`) is not one, so :func:`settled` raises it.

Example::

    outcome = settled(continuation(details, request))
    outcome.add_done_callback(on_done)
"""

from __future__ import annotations

from typing import Any

import grpc

__all__ = ["settled"]


def settled(outcome: Any) -> Any:
    """``outcome`` if it is a call/future; raise it if it is a bare error."""
    if isinstance(outcome, BaseException) and not isinstance(outcome, grpc.Future):
        raise outcome
    return outcome
