"""A control plane that sends invalid xDS: meshlib NACKs it, logs it, and keeps
serving on the last good configuration."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

from envoy.config.cluster.v3 import cluster_pb2

import meshlib
from meshlib.xds import CLUSTER
from tests.e2e.mesh_files import write_mesh
from tests.e2e.meshlib_backends import GET, Backend
from xds_server.cache.snapshot import Snapshot
from xds_server.control_plane import ControlPlane
from xds_server.metrics import ControlPlaneMetrics
from xds_server.server import serve
from xds_server.sources.yaml_loader import ConfigLoader

CLUSTER_NAME = "outbound|50051||reviews.default.svc.cluster.local"


class InProcessControlPlane:
    """Our control plane on a thread of its own, so a test can swap its snapshots."""

    def __init__(self, config: Path) -> None:
        self.metrics = ControlPlaneMetrics()
        self.cp = ControlPlane(ConfigLoader(config).load(), metrics=self.metrics)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server, self.port = asyncio.run_coroutine_threadsafe(
            serve(("127.0.0.1", 0), self.cp.cache, self.cp.callbacks()), self.loop).result(10)

    def replace(self, group: str, type_url: str, name: str, message: object) -> None:
        async def swap() -> None:
            old = self.cp.cache.get_snapshot(group)
            assert old is not None
            resources = {t: dict(old.of_type(t)) for t in old.type_versions}
            messages = {t: {n: r.message for n, r in by.items()} for t, by in resources.items()}
            messages[type_url][name] = message
            self.cp.cache.set_snapshot(group, Snapshot.from_messages(messages))
        asyncio.run_coroutine_threadsafe(swap(), self.loop).result(10)

    def nacks(self) -> float:
        return self.metrics.nacks.labels("CDS")._value.get()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_invalid_cluster_is_nacked_logged_and_traffic_continues(tmp_path, caplog):
    backend = Backend("reviews-v1-0").start()
    write_mesh(tmp_path / "mesh", {"reviews-v1": [backend.port]})
    cp = InProcessControlPlane(tmp_path / "mesh")
    mesh = meshlib.Mesh(xds_address=f"127.0.0.1:{cp.port}", node_id="nack-test")
    try:
        get = mesh.channel("reviews").unary_unary(GET)
        assert get(b"", timeout=5) == b"reviews-v1-0"
        bad = cluster_pb2.Cluster(name=CLUSTER_NAME, type=cluster_pb2.Cluster.STATIC)
        with caplog.at_level(logging.WARNING, logger="meshlib"):
            cp.replace("meshlib/default", CLUSTER, CLUSTER_NAME, bad)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and cp.nacks() < 1:
                assert get(b"", timeout=5) == b"reviews-v1-0"
                time.sleep(0.02)
        assert cp.nacks() >= 1
        assert any("EDS only" in r.getMessage() and CLUSTER_NAME in r.getMessage()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
        assert [get(b"", timeout=5) for _ in range(50)] == [b"reviews-v1-0"] * 50
    finally:
        mesh.close()
        cp.stop()
        backend.stop()
