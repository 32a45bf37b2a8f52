"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection
does it: every replica serves xDS, only the Lease holder writes status and the root
ConfigMaps.

The holder renews ``spec.renewTime`` every ``retry_period``; the others watch the
record and take over once it has not changed for ``lease_duration`` of *their own*
clock (no trust in the holder's clock). Writes use the Lease's resourceVersion, so two
candidates racing for an expired Lease cannot both win (409 Conflict for the loser). A
holder that cannot renew for ``renew_deadline`` stops acting as leader before another
replica may take over (``renew_deadline < lease_duration``). On a clean stop the
holder releases the Lease, so a rolling update moves leadership at once.

Example::

    elector = LeaderElector(api, "meshlib-system", "meshlib-control-plane", "cp-7f9c")
    elector.start()
    if elector.is_leader: ...
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from xds_server.kube_api import KubeApi, KubeApiError, Resource

__all__ = ["LEASES", "LeaderElector"]

log = logging.getLogger(__name__)

LEASES = Resource("Lease", "coordination.k8s.io/v1", "leases")


def _micro_time(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Holds, or waits for, the Lease ``namespace/name`` as ``identity``."""

    def __init__(self, api: KubeApi, namespace: str, name: str, identity: str, *,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0,
                 on_change: Callable[[bool], None] = lambda leader: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        self.api = api
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration, self.renew_deadline = lease_duration, renew_deadline
        self.retry_period = retry_period
        self._on_change = on_change
        self._clock = clock
        self._leader = False
        self._renewed_at = 0.0  # our clock, at our last successful renewal
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0  # our clock, when that record last changed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.transitions = 0  # times this replica became leader

    @property
    def is_leader(self) -> bool:
        """Whether this replica holds the Lease (and renewed it within the deadline)."""
        return self._leader and self._clock() - self._renewed_at < self.renew_deadline

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election",
                                        daemon=True)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        """Stop campaigning; the holder releases the Lease (``release``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if release and self._leader:
            try:
                self._release()
            except (KubeApiError, OSError) as err:
                log.warning("could not release Lease %s/%s: %s", self.namespace, self.name,
                            err)
        self._set_leader(False)

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.try_acquire_or_renew()
            except Exception as err:  # the API server away: keep trying
                log.warning("Lease %s/%s: %s", self.namespace, self.name, err)
            if self._leader and not self.is_leader:
                log.warning("Lease %s/%s: not renewed for %.0fs; no longer leading",
                            self.namespace, self.name, self.renew_deadline)
                self._set_leader(False)
            self._stop.wait(self.retry_period)

    def try_acquire_or_renew(self) -> bool:
        """One round: create, renew or take over the Lease if we may. Whether we hold
        it after."""
        path = LEASES.path(self.namespace, self.name)
        now = dt.datetime.now(dt.UTC)
        try:
            lease = self.api.get(path)
        except KubeApiError as err:
            if err.status != 404:
                raise
            return self._create(now)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, str(spec.get("renewTime", "")))
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        expired = self._clock() - self._observed_at >= duration
        if holder and holder != self.identity and not expired:
            self._set_leader(False)
            return False
        taking_over = holder != self.identity
        spec = {**spec, "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease_duration),
                "renewTime": _micro_time(now)}
        if taking_over:
            spec["acquireTime"] = _micro_time(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (
                1 if holder else 0)
        try:
            updated = self.api.replace(path, {**lease, "spec": spec})
        except KubeApiError as err:
            if err.status == 409:  # another replica wrote first
                self._set_leader(False)
                return False
            raise
        self._took(updated, taking_over)
        return True

    def _create(self, now: dt.datetime) -> bool:
        body = {"apiVersion": LEASES.api_version, "kind": LEASES.kind,
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity,
                         "leaseDurationSeconds": int(self.lease_duration),
                         "acquireTime": _micro_time(now), "renewTime": _micro_time(now),
                         "leaseTransitions": 0}}
        try:
            created = self.api.create(LEASES.path(self.namespace), body)
        except KubeApiError as err:
            if err.status == 409:  # created by another replica meanwhile
                return False
            raise
        self._took(created, True)
        return True

    def _took(self, lease: dict[str, Any], acquired: bool) -> None:
        spec = lease.get("spec") or {}
        self._observed = (self.identity, str(spec.get("renewTime", "")))
        self._observed_at = self._renewed_at = self._clock()
        if acquired:
            log.info("Lease %s/%s acquired by %s", self.namespace, self.name, self.identity)
        self._set_leader(True)

    def _release(self) -> None:
        path = LEASES.path(self.namespace, self.name)
        lease = self.api.get(path)
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return
        # As client-go releases: no holder, and a 1 s lease already past.
        spec = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1,
                "renewTime": _micro_time(dt.datetime.now(dt.UTC))}
        self.api.replace(path, {**lease, "spec": spec})
        log.info("Lease %s/%s released by %s", self.namespace, self.name, self.identity)

    def _set_leader(self, leader: bool) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        if leader:
            self.transitions += 1
        try:
            self._on_change(leader)
        except Exception:
            log.exception("leader change callback failed")
