"""The immutable per-target routing table calls read: one attribute load per call.

A :class:`RouteTable` holds the target's virtual host, with each route's weighted
clusters resolved to live :class:`ClusterState` objects and its policies decoded once.
Targets whose routes match on the method only (no header or fraction matches) memoize
``method → route``, so most calls route with one dict lookup.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from meshlib._cluster_state import ClusterState
from meshlib.contract import DEFAULT_TRACING_SAMPLING
from meshlib.errors import CallError, CircuitOpenError, NoHealthyEndpointError, status_code
from meshlib.xds import FaultConfig, RetryPolicy, Route, VirtualHost, match_route

__all__ = ["Metadata", "RouteEntry", "RouteRetry", "RouteTable"]

Metadata = Sequence[tuple[str, str | bytes]] | None
_LOCAL_REFUSALS = (CircuitOpenError, NoHealthyEndpointError)


@dataclass(frozen=True, slots=True, eq=False)
class RouteRetry:
    """A route's retry policy from the control plane (gRFC A44) as the rules of
    meshlib's retry engine (:class:`~meshlib.resilience.RetryRun`); made once per
    routing table, not per call."""

    policy: RetryPolicy
    attempts: int
    backoff: float
    max_backoff: float
    per_try_timeout: float | None
    retry_on: frozenset[grpc.StatusCode]

    @classmethod
    def of(cls, policy: RetryPolicy | None) -> RouteRetry | None:
        if policy is None:
            return None
        return cls(policy=policy, attempts=1 + policy.num_retries,
                   backoff=policy.base_interval, max_backoff=policy.max_interval,
                   per_try_timeout=policy.per_try_timeout, retry_on=policy.retry_on)

    def retryable(self, error: BaseException) -> bool:
        """A ``retry_on`` code, and not one of meshlib's own refusals (open circuit,
        limit, no endpoint), which backing off and asking again would only turn into
        spent budget under overload."""
        return status_code(error) in self.retry_on and not isinstance(error, _LOCAL_REFUSALS)


@dataclass(frozen=True, slots=True, eq=False)
class RouteEntry:
    """One route, ready for calls: clusters by cumulative weight and its policies."""

    route: Route
    clusters: tuple[ClusterState, ...]
    cumulative: tuple[int, ...]
    total: int
    timeout: float | None
    retry: RouteRetry | None
    hash_headers: tuple[str, ...]
    fault: FaultConfig | None

    @classmethod
    def build(cls, route: Route, clusters: Mapping[str, ClusterState]) -> RouteEntry:
        action = route.action
        if action is None:
            return cls(route=route, clusters=(), cumulative=(), total=0, timeout=None,
                       retry=None, hash_headers=(), fault=route.fault)
        states, cumulative, running = [], [], 0
        for weight in action.clusters:
            states.append(clusters[weight.name])
            running += weight.weight
            cumulative.append(running)
        # gRFC A31: the route's max_stream_duration caps the deadline; Envoy's
        # ``timeout`` is the same number in what our control plane sends.
        limits = [t for t in (action.max_stream_duration, action.timeout) if t]
        return cls(route=route, clusters=tuple(states), cumulative=tuple(cumulative),
                   total=running, timeout=min(limits) if limits else None,
                   retry=RouteRetry.of(action.retry_policy),
                   hash_headers=tuple(h.header_name for h in action.hash_policies),
                   fault=route.fault)

    def pick_cluster(self) -> ClusterState:
        """A cluster, by weight (canary, A/B, blue-green)."""
        clusters = self.clusters
        if len(clusters) == 1:
            return clusters[0]
        if not clusters:
            raise CallError(f"route {self.route.name or '(unnamed)'} does not forward calls",
                            code=grpc.StatusCode.UNAVAILABLE)
        return clusters[bisect.bisect_right(self.cumulative, random.random() * self.total)]

    def hash_key(self, metadata: Metadata) -> str | None:
        """The ring-hash input: the first hash header present in ``metadata``."""
        if not self.hash_headers or not metadata:
            return None
        for name in self.hash_headers:
            for key, value in metadata:
                if key.lower() == name:
                    return value if isinstance(value, str) else value.decode("latin-1")
        return None


@dataclass(frozen=True, slots=True, eq=False)
class RouteTable:
    """The routes of one target (its virtual host), ready for calls."""

    target: str
    virtual_host: VirtualHost
    entries: tuple[RouteEntry, ...]
    clusters: Mapping[str, ClusterState]
    by_method_only: bool
    sampling: float = DEFAULT_TRACING_SAMPLING  # MeshConfig tracing: share of root calls traced
    access_log: bool = False  # MeshConfig accessLogs: one JSON line per call
    _memo: dict[str, RouteEntry] = field(default_factory=dict)
    _by_id: dict[int, RouteEntry] = field(default_factory=dict)

    @classmethod
    def build(cls, target: str, virtual_host: VirtualHost,
              clusters: Mapping[str, ClusterState], *,
              sampling: float = DEFAULT_TRACING_SAMPLING,
              access_log: bool = False) -> RouteTable:
        entries = tuple(RouteEntry.build(r, clusters) for r in virtual_host.routes)
        method_only = all(not r.match.headers and r.match.fraction_percent is None
                          and not r.match.query_parameters for r in virtual_host.routes)
        return cls(target=target, virtual_host=virtual_host, entries=entries,
                   clusters=dict(clusters), by_method_only=method_only,
                   sampling=sampling, access_log=access_log,
                   _by_id={id(e.route): e for e in entries})

    def route(self, method: str, metadata: Metadata) -> RouteEntry:
        """The route the call takes; raises ``CallError`` UNAVAILABLE when none matches."""
        if self.by_method_only:
            entry = self._memo.get(method)
            if entry is not None:
                return entry
            entry = self._match(method, {})
            if len(self._memo) < 4096:
                self._memo[method] = entry
            return entry
        headers: dict[str, str] = {}
        if metadata:
            for key, value in metadata:
                if isinstance(value, str):
                    key = key.lower()
                    headers[key] = f"{headers[key]},{value}" if key in headers else value
        return self._match(method, headers)

    def _match(self, method: str, headers: Mapping[str, str]) -> RouteEntry:
        route = match_route(self.virtual_host.routes, method, headers)
        if route is None:
            raise CallError(f"{self.target}: no route matches {method}",
                            service=self.target, code=grpc.StatusCode.UNAVAILABLE)
        return self._by_id[id(route)]
