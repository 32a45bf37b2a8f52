"""Live state of one upstream cluster: its endpoints, picker, limits and ejections.

The xDS thread replaces the configuration (CDS) and the endpoint list (EDS); calls read
``picker`` and report outcomes. What calls change — in-flight counts, consecutive
failures, ejections — lives on :class:`EndpointState` objects that survive EDS updates
for endpoints that stay, so an update does not forgive a failing endpoint.

Outlier detection (consecutive failures, as Envoy's ``consecutive_5xx``): after
``consecutive_5xx`` failures in a row an endpoint is ejected for ``base_ejection_time``
× the number of times it has been ejected (that count decays by one per ``interval``
spent back in service), capped at ``max(base, max_ejection_time)``; no ejection takes
the share of ejected endpoints to ``max_ejection_percent`` or above (gRFC A50's rule,
so at least one endpoint can always be ejected). Ejected endpoints come back lazily:
the next pick after their time is up rebuilds the picker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from meshlib._balancer import Picker, make_picker
from meshlib.contract import service_of
from meshlib.errors import CallError, CircuitOpenError, NoHealthyEndpointError
from meshlib.resilience import FAILURE_CODES, CircuitBreaker, RetryBudget
from meshlib.xds import ClusterUpdate, Endpoint

__all__ = ["FAILURE_CODES", "ClusterState", "EndpointState", "service_of"]

log = logging.getLogger("meshlib")
_T = TypeVar("_T")


class EndpointState:
    """One endpoint of one cluster, as calls see it."""

    __slots__ = (
        "__weakref__",
        "active",
        "address",
        "breaker",
        "consecutive_failures",
        "ejected_until",
        "ejections",
        "returned_at",
        "server_name",
        "weight",
    )

    def __init__(self, endpoint: Endpoint, breaker: CircuitBreaker | None) -> None:
        self.address = f"[{endpoint.address}]:{endpoint.port}" if ":" in endpoint.address \
            else f"{endpoint.address}:{endpoint.port}"
        self.weight = endpoint.weight
        self.active = 0
        self.breaker = breaker
        self.consecutive_failures = 0
        self.ejected_until = 0.0
        self.ejections = 0
        self.returned_at = 0.0
        self.server_name: str | None = None  # the identity to check (mTLS), else None

    def __repr__(self) -> str:
        return f"EndpointState({self.address}, active={self.active})"


class ClusterState:
    """Endpoints, picker, limits and retry budget of one cluster.

    ``acquire``/``release`` are called around each call attempt; ``picker`` is swapped
    whole. Calls that find no endpoint get :class:`NoHealthyEndpointError`.
    """

    def __init__(self, name: str, *, clock: Callable[[], float] = time.monotonic,
                 on_endpoints: Callable[[ClusterState, set[str], set[str]], None] | None = None,
                 on_server_name: Callable[[], None] | None = None) -> None:
        self.name = name
        self.service = service_of(name)
        self.config: ClusterUpdate | None = None
        self.endpoints: dict[str, EndpointState] = {}
        self.picker: Picker = make_picker(ClusterUpdate(name=name, eds_service_name=name)
                                          .lb_policy, ())
        self.max_requests = 1024
        self.in_flight = 0
        self.budget = RetryBudget()
        self.has_endpoints = False  # EDS received at least once
        self.ejections_total = 0  # outlier ejections so far (metrics)
        self._next_return = 0.0  # earliest ejected_until, 0 when none ejected
        self._lock = threading.Lock()
        self._clock = clock
        self._on_endpoints = on_endpoints
        self._on_server_name = on_server_name
        self.server_name: str | None = None  # mTLS: the identity endpoints must prove

    # ------------------------------------------------------------ xDS side

    def set_config(self, config: ClusterUpdate) -> None:
        """A new CDS value: LB policy, limits, breaker and budget settings."""
        old, self.config = self.config, config
        self.max_requests = config.max_requests
        server_name = None if config.tls is None else config.tls.server_name
        if server_name != self.server_name:
            self.server_name = server_name
            for endpoint in self.endpoints.values():
                endpoint.server_name = server_name
            if self._on_server_name is not None:
                self._on_server_name()  # cached channels checked the old name
        if old is None or old.retry_budget != config.retry_budget:
            b = config.retry_budget
            self.budget = RetryBudget() if b is None else RetryBudget(
                b.percent, b.min_retries_per_second)
        if old is None or old.circuit_breaker != config.circuit_breaker:
            for endpoint in self.endpoints.values():
                endpoint.breaker = self._breaker(endpoint.address)
        self._rebuild()

    def set_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        """A new EDS value: keep the state of endpoints that stay."""
        with self._lock:
            old = self.endpoints
            fresh: dict[str, EndpointState] = {}
            for endpoint in endpoints:
                if not endpoint.healthy:
                    continue
                state = EndpointState(endpoint, None)
                kept = old.get(state.address)
                if kept is not None:
                    kept.weight = endpoint.weight
                    fresh[state.address] = kept
                else:
                    state.breaker = self._breaker(state.address)
                    state.server_name = self.server_name
                    fresh[state.address] = state
            self.endpoints = fresh
            self.has_endpoints = True
            added = fresh.keys() - old.keys()
            removed = old.keys() - fresh.keys()
            self._rebuild_locked()
        if self._on_endpoints is not None and (added or removed):
            self._on_endpoints(self, set(added), set(removed))

    def _breaker(self, address: str) -> CircuitBreaker | None:
        cb = self.config.circuit_breaker if self.config is not None else None
        if cb is None:
            return None
        return CircuitBreaker(cb.consecutive_failures, cb.open_duration, cb.half_open_probes,
                              clock=self._clock, name=f"{self.service} endpoint {address}")

    def _rebuild(self) -> None:
        with self._lock:
            self._rebuild_locked()

    def _rebuild_locked(self) -> None:
        now = self._clock()
        available = []
        next_return = 0.0
        for endpoint in self.endpoints.values():
            if endpoint.ejected_until > now:
                next_return = min(next_return or endpoint.ejected_until, endpoint.ejected_until)
                continue
            if endpoint.ejected_until:
                endpoint.ejected_until = 0.0
                endpoint.returned_at = now
                endpoint.consecutive_failures = 0
                log.info("%s: endpoint %s back in service", self.service, endpoint.address)
            available.append(endpoint)
        policy = self.config.lb_policy if self.config is not None else None
        self.picker = make_picker(policy, available) if policy is not None else make_picker(
            ClusterUpdate(name=self.name, eds_service_name=self.name).lb_policy, available)
        self._next_return = next_return

    # ------------------------------------------------------------ call side

    def pick(self, hash_key: str | None = None) -> EndpointState:
        """An endpoint whose breaker admits a call, counted as in flight.

        Raises :class:`NoHealthyEndpointError`, or :class:`CircuitOpenError` when the
        cluster is at ``max_requests`` or every endpoint's breaker refuses.
        """
        if self._next_return and self._clock() >= self._next_return:
            self._rebuild()
        picker = self.picker
        endpoint = picker.pick(hash_key)
        if endpoint is None:
            raise NoHealthyEndpointError(self._no_endpoint_message(), service=self.service)
        breaker = endpoint.breaker  # type: ignore[attr-defined]
        if breaker is not None:
            endpoint = self._admit(picker, endpoint, hash_key)
        with self._lock:
            if self.in_flight >= self.max_requests:
                if endpoint.breaker is not None:  # type: ignore[attr-defined]
                    endpoint.breaker.release()  # type: ignore[attr-defined]
                raise CircuitOpenError(
                    f"{self.service}: {self.in_flight} calls in flight, the limit "
                    f"(maxConcurrentRequests) is {self.max_requests}", service=self.service)
            self.in_flight += 1
            endpoint.active += 1
        return endpoint  # type: ignore[return-value]

    def start_call(self, hash_key: str | None, start: Callable[[EndpointState], _T],
                   releaser: Callable[[ClusterState, EndpointState], Callable[[Any], None]]
                   ) -> _T:
        """Pick an endpoint and start a call there that reports its own end: ``start``
        returns the call; ``releaser(self, endpoint)`` becomes its done callback. A
        call that cannot even start is released at once."""
        endpoint = self.pick(hash_key)
        try:
            call = start(endpoint)
        except BaseException:
            self.release(endpoint, grpc.StatusCode.CANCELLED)
            raise
        call.add_done_callback(releaser(self, endpoint))  # type: ignore[attr-defined]
        return call

    def _admit(self, picker: Picker, first: object, hash_key: str | None) -> EndpointState:
        """The first endpoint whose breaker admits, trying each at most once or so."""
        error: CircuitOpenError | None = None
        endpoint = first
        for _ in range(max(len(picker.endpoints), 1) * 2):
            try:
                endpoint.breaker.admit()  # type: ignore[attr-defined]
                return endpoint  # type: ignore[return-value]
            except CircuitOpenError as err:
                error = err
            endpoint = picker.pick(hash_key if hash_key is None else f"{hash_key}+")
            hash_key = None  # after a refusal, spread instead of sticking to the ring
            if endpoint is None:
                break
        raise CircuitOpenError(
            f"{self.service}: circuit open for every endpoint ({error})", service=self.service)

    def release(self, endpoint: EndpointState, code: grpc.StatusCode | None,
                error: BaseException | None = None) -> None:
        """An attempt on ``endpoint`` ended with ``code`` (None: OK)."""
        with self._lock:
            self.in_flight -= 1
            endpoint.active -= 1
        failed = code is not None and code in FAILURE_CODES
        breaker = endpoint.breaker
        if breaker is not None:
            if code is grpc.StatusCode.CANCELLED:
                breaker.release()  # no outcome: frees a half-open probe, counts nothing
                return
            if failed:
                breaker.record(error if error is not None else CallError(
                    f"{self.service}: {endpoint.address} failed", code=code,
                    service=self.service))
            else:  # OK, or the endpoint answered and the request was at fault
                breaker.record(None)
        if code is grpc.StatusCode.CANCELLED:
            return  # the caller gave up: says nothing about the endpoint
        if not failed:
            if endpoint.consecutive_failures:
                endpoint.consecutive_failures = 0
            return
        endpoint.consecutive_failures += 1
        od = self.config.outlier_detection if self.config is not None else None
        if (od is not None and od.enforcing_consecutive_5xx
                and endpoint.consecutive_failures >= od.consecutive_5xx
                and not endpoint.ejected_until):
            self._eject(endpoint)

    def _eject(self, endpoint: EndpointState) -> None:
        od = self.config.outlier_detection if self.config is not None else None
        assert od is not None
        now = self._clock()
        with self._lock:
            if endpoint.ejected_until or endpoint.address not in self.endpoints:
                return
            total = len(self.endpoints)
            ejected = sum(1 for e in self.endpoints.values() if e.ejected_until > now)
            if ejected * 100 >= od.max_ejection_percent * total:
                return
            if endpoint.ejections and endpoint.returned_at and od.interval > 0:
                decay = int((now - endpoint.returned_at) / od.interval)
                endpoint.ejections = max(0, endpoint.ejections - decay)
            endpoint.ejections += 1
            duration = min(od.base_ejection_time * endpoint.ejections,
                           max(od.base_ejection_time, od.max_ejection_time))
            endpoint.ejected_until = now + duration
            self.ejections_total += 1
            self._rebuild_locked()
        log.warning("%s: endpoint %s ejected for %.1fs after %d consecutive failures",
                    self.service, endpoint.address, duration, endpoint.consecutive_failures)

    def _no_endpoint_message(self) -> str:
        if not self.has_endpoints:
            return f"{self.service}: no endpoints received from the control plane yet"
        total = len(self.endpoints)
        if total == 0:
            return f"{self.service}: no healthy endpoint (the service has no ready endpoints)"
        now = self._clock()
        ejected = sum(1 for e in self.endpoints.values() if e.ejected_until > now)
        return f"{self.service}: no healthy endpoint ({total} endpoints, {ejected} ejected)"
