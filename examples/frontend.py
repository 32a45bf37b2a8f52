"""The frontend of the examples: a Python service that calls ``reviews`` through meshlib.

Its tests, ``examples/tests/test_frontend.py``, run it in a real mesh on loopback with
meshlib's pytest fixtures (docs/testing.md): retries, canary routing, authorization
and outages, each in a few lines.
"""

from __future__ import annotations

import grpc

import meshlib

METHOD = "/demo.Reviews/Get"
UNAVAILABLE = "reviews are unavailable"


class Frontend:
    """Shows a product's reviews; degrades to a placeholder when reviews is down."""

    def __init__(self, mesh: meshlib.Mesh, target: str = "reviews") -> None:
        self._get = mesh.channel(target).unary_unary(METHOD)

    def reviews(self, product_id: int, *, canary: bool = False, timeout: float = 2.0) -> str:
        """The reviews of ``product_id`` (``canary=True`` asks for the canary build)."""
        metadata = (("x-canary", "true"),) if canary else ()
        try:
            answer = self._get(str(product_id).encode(), timeout=timeout, metadata=metadata)
        except grpc.RpcError as err:
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return UNAVAILABLE
            raise
        return bytes(answer).decode()
