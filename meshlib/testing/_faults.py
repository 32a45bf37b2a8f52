"""Faults injected into a service live, the way an operator would: a TrafficPolicy.

``mesh_faults.abort("reviews")`` merges ``faultInjection`` into the TrafficPolicy of
``reviews`` (making one if there is none) and waits until the clients have it; every
caller's pipeline then fails or delays that share of its calls to ``reviews``.
:meth:`MeshFaults.clear` (and the fixture's teardown) takes the faults out again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshlib.contract import DEFAULT_NAMESPACE
from meshlib.testing import config

if TYPE_CHECKING:
    from meshlib.testing._control_plane import MeshControlPlane

__all__ = ["MeshFaults"]

_POLICY = "TrafficPolicy"


@dataclass(frozen=True, slots=True)
class _Saved:
    """What a faulted service's policy was: its name, whether the fixture made it, and
    the ``faultInjection`` it had (None: none)."""

    name: str
    created: bool
    fault: dict[str, Any] | None


class MeshFaults:
    """The ``mesh_faults`` fixture: fault injection on services of one control plane.

    Example::

        mesh_faults.abort("reviews", grpc_status="UNAVAILABLE", percent=50)
        mesh_faults.delay("ratings", 0.2)
        mesh_faults.clear("reviews")          # its TrafficPolicy without the faults

    Only ``faultInjection`` is touched: other edits a test makes to the policy while a
    fault is on stay when it is cleared.
    """

    def __init__(self, control_plane: MeshControlPlane) -> None:
        self._cp = control_plane
        self._saved: dict[tuple[str, str], _Saved] = {}

    def delay(self, service: str, seconds: float, *, percent: float = 100,
              namespace: str = DEFAULT_NAMESPACE) -> None:
        """Delay ``percent`` % of calls to ``service`` by ``seconds`` (a caller's
        deadline still fires during the delay)."""
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
        gets back the ``faultInjection`` it had (a policy the fixture made is deleted)."""
        keys = list(self._saved) if service is None else [(namespace, service)]
        changed = False
        for key in keys:
            saved = self._saved.pop(key, None)
            policy = None if saved is None else self._cp.get(_POLICY, saved.name, key[0])
            if saved is None or policy is None:
                continue  # never faulted, or the test deleted the policy itself
            spec = policy["spec"]
            if saved.fault is None:
                spec.pop("faultInjection", None)
            else:
                spec["faultInjection"] = saved.fault
            if saved.created and set(spec) <= {"targetRef"}:
                self._cp.delete(_POLICY, saved.name, key[0])
            else:
                self._cp.apply(policy)
            changed = True
        if changed:
            self._cp.wait_synced()

    def _inject(self, service: str, namespace: str, kind: str, fault: dict[str, Any]) -> None:
        current = self._policy(service, namespace)
        policy = copy.deepcopy(current) if current is not None else \
            config.traffic_policy(service, namespace=namespace)
        policy["spec"].setdefault("faultInjection", {})[kind] = fault
        self._cp.apply(policy)  # ConfigError (no such Service, say): nothing to undo
        key = (namespace, service)
        if key not in self._saved:
            before = None if current is None else current["spec"].get("faultInjection")
            self._saved[key] = _Saved(policy["metadata"]["name"], current is None,
                                      copy.deepcopy(before))
        self._cp.wait_synced()

    def _policy(self, service: str, namespace: str) -> dict[str, Any] | None:
        """The TrafficPolicy of ``namespace`` whose targetRef is Service ``service``."""
        for obj in self._cp.objects:
            meta, spec = obj.get("metadata", {}), obj.get("spec", {})
            target = spec.get("targetRef", {})
            if obj.get("kind") == _POLICY \
                    and meta.get("namespace", DEFAULT_NAMESPACE) == namespace \
                    and target.get("kind", "Service") == "Service" \
                    and target.get("name") == service:
                return copy.deepcopy(obj)
        return None
