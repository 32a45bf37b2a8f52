"""Faults injected into a service live, the way an operator would: a TrafficPolicy.

``mesh_faults.abort("reviews")`` merges ``faultInjection`` into the TrafficPolicy of
``reviews`` (making one if there is none) and waits until the clients have it; every
caller's pipeline then fails or delays that share of its calls to ``reviews``.
:meth:`MeshFaults.clear` (and the fixture's teardown) puts the policy back as it was.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from meshlib.contract import DEFAULT_NAMESPACE
from meshlib.testing import config

if TYPE_CHECKING:
    from meshlib.testing._control_plane import MeshControlPlane

__all__ = ["MeshFaults"]

_POLICY = "TrafficPolicy"


class MeshFaults:
    """The ``mesh_faults`` fixture: fault injection on services of one control plane.

    Example::

        mesh_faults.abort("reviews", grpc_status="UNAVAILABLE", percent=50)
        mesh_faults.delay("ratings", 0.2)
        mesh_faults.clear("reviews")          # back to its own TrafficPolicy
    """

    def __init__(self, control_plane: MeshControlPlane) -> None:
        self._cp = control_plane
        # The policy each faulted service had before (None: it had none).
        self._saved: dict[tuple[str, str], dict[str, Any] | None] = {}

    def delay(self, service: str, seconds: float, *, percent: float = 100,
              namespace: str = DEFAULT_NAMESPACE) -> None:
        """Delay ``percent`` % of calls to ``service`` by ``seconds``."""
        self._inject(service, namespace, "delay",
                     {"percent": percent, "fixedDelay": f"{round(seconds * 1000)}ms"})

    def abort(self, service: str, *, grpc_status: Any = "UNAVAILABLE",
              http_status: int | None = None, percent: float = 100,
              namespace: str = DEFAULT_NAMESPACE) -> None:
        """Fail ``percent`` % of calls to ``service``: gRPC calls with ``grpc_status``
        (a name or a ``grpc.StatusCode``), HTTP requests with ``http_status``."""
        name = getattr(grpc_status, "name", grpc_status)
        abort: dict[str, Any] = {"percent": percent, "grpcStatus": str(name)}
        if http_status is not None:
            abort["httpStatus"] = http_status
        self._inject(service, namespace, "abort", abort)

    def unavailable(self, service: str, *, percent: float = 100,
                    namespace: str = DEFAULT_NAMESPACE) -> None:
        """Make ``service`` unavailable to ``percent`` % of calls: gRPC ``UNAVAILABLE``,
        HTTP ``503``."""
        self.abort(service, grpc_status="UNAVAILABLE", http_status=503, percent=percent,
                   namespace=namespace)

    def clear(self, service: str | None = None, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Remove the faults of ``service`` (all services if None): its TrafficPolicy
        is back as it was before the first fault."""
        keys = list(self._saved) if service is None else [(namespace, service)]
        for key in keys:
            if key not in self._saved:
                continue
            saved = self._saved.pop(key)
            if saved is None:
                self._cp.delete(_POLICY, key[1], key[0])
            else:
                self._cp.apply(saved)
        self._cp.wait_synced()

    def _inject(self, service: str, namespace: str, kind: str, fault: dict[str, Any]) -> None:
        current = self._policy(service, namespace)
        key = (namespace, service)
        if key not in self._saved:
            self._saved[key] = copy.deepcopy(current)
        policy = copy.deepcopy(current) if current is not None else \
            config.traffic_policy(service, namespace=namespace)
        policy["spec"].setdefault("faultInjection", {})[kind] = fault
        self._cp.apply(policy)
        self._cp.wait_synced()

    def _policy(self, service: str, namespace: str) -> dict[str, Any] | None:
        """The TrafficPolicy targeting ``service`` (by name ``service`` first)."""
        own = self._cp.get(_POLICY, service, namespace)
        if own is not None:
            return own
        for obj in self._cp.objects:
            meta, spec = obj.get("metadata", {}), obj.get("spec", {})
            if obj.get("kind") == _POLICY and meta.get("namespace", DEFAULT_NAMESPACE) == \
                    namespace and spec.get("targetRef", {}).get("name") == service:
                return obj
        return None
