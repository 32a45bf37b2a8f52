"""The control plane's Kubernetes side (``meshctl control-plane --kubernetes``): what it
reads, what the leader writes, and where its CA lives.

* Reads: :class:`~xds_server.sources.kubernetes.KubernetesSource` (informers).
* The CA: in the Secret ``meshlib-ca`` of its own namespace
  (:class:`~xds_server.ca.SecretCaStore`, unless ``--ca-dir``); workloads are
  authenticated by TokenReview (unless ``--token-file``).
* Leader only (a Lease, :class:`~xds_server.leader.LeaderElector`): route and policy
  status (:class:`~xds_server.status.StatusWriter`) and the root ConfigMap in every
  namespace with mesh Services (:class:`~xds_server.ca.RootPublisher`). Every replica
  serves xDS and the CA.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xds_server.ca._kubernetes import RootPublisher, SecretCaStore, TokenReviewAuthenticator
from xds_server.kube_api import KubeApi
from xds_server.leader import LeaderElector
from xds_server.model import MeshModel
from xds_server.sources.file_watcher import ModelChange
from xds_server.sources.kubernetes import KubernetesSource
from xds_server.status import StatusWriter

__all__ = ["CONTROL_PLANE_NAME", "DEFAULT_CONTROL_NAMESPACE", "Cluster", "ClusterOptions"]

log = logging.getLogger(__name__)

DEFAULT_CONTROL_NAMESPACE = "meshlib-system"
#: The Lease, and the name of the control plane's Deployment and Service.
CONTROL_PLANE_NAME = "meshlib-control-plane"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterOptions:
    """Where the API server is and what to read: ``kubeconfig`` (None: in-cluster, else
    ``$KUBECONFIG``), ``namespaces`` (empty: all), the control plane's own
    ``namespace`` (default ``$POD_NAMESPACE``) and its ``identity`` in the Lease
    (default ``$POD_NAME``, else the host name)."""

    kubeconfig: Path | None = None
    namespaces: Sequence[str] = ()
    namespace: str = ""
    identity: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    @property
    def control_namespace(self) -> str:
        return self.namespace or os.environ.get("POD_NAMESPACE") or DEFAULT_CONTROL_NAMESPACE

    @property
    def holder(self) -> str:
        return self.identity or os.environ.get("POD_NAME") or socket.gethostname()


class Cluster:
    """The API server connection and what runs on it."""

    def __init__(self, options: ClusterOptions, api: KubeApi | None = None) -> None:
        self.options = options
        self.api = api or KubeApi.from_config(
            str(options.kubeconfig) if options.kubeconfig else None)
        self.source = KubernetesSource(self.api, namespaces=options.namespaces)
        self.elector = LeaderElector(
            self.api, options.control_namespace, CONTROL_PLANE_NAME, options.holder,
            lease_duration=options.lease_duration, renew_deadline=options.renew_deadline,
            retry_period=options.retry_period, on_change=self._leadership)
        self.status = StatusWriter(self.api, is_leader=lambda: self.elector.is_leader)
        self.publisher: RootPublisher | None = None
        self._model: MeshModel | None = None

    def ca_store(self) -> SecretCaStore:
        """The Secret the CA lives in."""
        return SecretCaStore(self.api, self.options.control_namespace)

    def authenticator(self) -> TokenReviewAuthenticator:
        """TokenReview of projected service-account tokens (audience ``meshlib``)."""
        return TokenReviewAuthenticator(self.api)

    def start(self, root_pem: bytes | None) -> None:
        """Campaign for the Lease; publish ``root_pem`` while leading."""
        if root_pem is not None:
            self.publisher = RootPublisher(self.api, root_pem)
        self.elector.start()

    def _leadership(self, leader: bool) -> None:  # the elector's thread
        log.info("%s %s the leader: %s", self.options.holder,
                 "is now" if leader else "is no longer",
                 "writing status and root ConfigMaps" if leader else "serving only")
        if leader:
            self.source.poke()  # a round of status writing now, not at the next event

    async def after(self, change: ModelChange, model: MeshModel) -> None:
        """What the leader writes after a change: status, then root ConfigMaps."""
        if not self.elector.is_leader:
            return
        objects = self.source.objects()
        await asyncio.to_thread(self.status.write, objects, change.problems)
        if self.publisher is not None:
            namespaces = {s.namespace for s in model.services} | set(self.options.namespaces)
            await asyncio.to_thread(self.publisher.publish, namespaces)

    def close(self) -> None:
        """Release the Lease (a clean stop hands leadership over at once)."""
        self.elector.stop(release=True)
        self.source.close()
        self.api.close()

    def summary(self) -> dict[str, Any]:
        return {"leader": self.elector.is_leader, "synced": self.source.synced}
