"""The fixtures used directly (the plugin is active in this project's own session too)."""

from __future__ import annotations

import logging
import time

import grpc
import pytest

from meshlib.testing import MeshControlPlane, NotSyncedError
from meshlib.testing import config as c

GET = "/demo.Reviews/Get"


def test_a_server_under_the_default_config_does_not_warn(mesh_service, mesh, caplog):
    """PERMISSIVE (the default) with no identity serves plaintext: that is the normal
    state of a mesh without a CA, not a warning on every server."""
    caplog.set_level(logging.INFO, logger="meshlib")
    reviews = mesh_service("reviews", {GET: lambda request, context: b"ok"})
    assert reviews.replicas[0].server.mtls_mode == "DISABLE"
    assert mesh.channel("reviews").unary_unary(GET)(b"", timeout=5) == b"ok"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "PERMISSIVE but this Mesh has no identity" in caplog.text  # said, at INFO


def test_a_forced_permissive_mode_without_identity_still_warns(mesh_service, caplog):
    mesh_service("reviews", {GET: lambda request, context: b"ok"}, mtls="PERMISSIVE")
    assert any(r.levelno == logging.WARNING and "no identity" in r.getMessage()
               for r in caplog.records)


def test_replicas_scale_down_and_stopped_replicas_fail(mesh_control_plane, mesh_service,
                                                       mesh):
    reviews = mesh_service("reviews", {GET: lambda request, context: b"ok"}, replicas=3)
    get = mesh.channel("reviews").unary_unary(GET)
    for _ in range(6):
        get(b"", timeout=5)
    assert [r.calls for r in reviews.replicas] == [2, 2, 2]
    gone = reviews.replicas[0]
    reviews.remove(gone)
    slices = [o for o in mesh_control_plane.objects if o["kind"] == "EndpointSlice"]
    assert len(slices) == 2
    for _ in range(4):
        get(b"", timeout=5)
    assert gone.calls == 2 and [r.calls for r in reviews.replicas] == [4, 4]


def test_wait_synced_times_out_naming_the_lagging_client():
    with MeshControlPlane(c.service("reviews"),
                         c.endpoints("reviews", ["127.0.0.1:1"])) as cp:
        mesh = cp.mesh("frontend")
        assert mesh.wait_ready("reviews", timeout=5)
        cp.wait_synced()
        with pytest.raises(NotSyncedError, match="frontend-1"):
            # A paused client: its xDS loop is blocked, so the edit is never ACKed.
            blocked = mesh._loop.submit(lambda: time.sleep(1.5))
            cp.apply(c.traffic_policy("reviews", timeout="1s"))
            cp.wait_synced(timeout=0.5)
        blocked.result()
        cp.wait_synced()


def test_the_grpc_status_of_an_abort_fault(mesh_service, mesh_faults, mesh):
    mesh_service("reviews", {GET: lambda request, context: b"ok"})
    mesh_faults.abort("reviews", grpc_status=grpc.StatusCode.PERMISSION_DENIED)
    with pytest.raises(grpc.RpcError) as err:
        mesh.channel("reviews").unary_unary(GET)(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


REVIEWS_PROTO = """syntax = "proto3";
package shop;
message GetRequest { int32 id = 1; }
message Review { int32 id = 1; string text = 2; }
service Reviews { rpc Get(GetRequest) returns (Review); }
"""


def test_a_servicer_of_generated_code_and_its_stub(tmp_path, monkeypatch, mesh_service, mesh):
    """What users write: a servicer subclassing the generated base class, called with
    the generated stub over ``mesh.channel``."""
    import importlib
    import subprocess
    import sys

    (tmp_path / "reviews.proto").write_text(REVIEWS_PROTO)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path}",
                    f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                    "reviews.proto"], check=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    pb2 = importlib.import_module("reviews_pb2")
    pb2_grpc = importlib.import_module("reviews_pb2_grpc")

    class Reviews(pb2_grpc.ReviewsServicer):
        def Get(self, request, context):
            return pb2.Review(id=request.id, text="5 stars")

    mesh_service("reviews", Reviews())
    stub = pb2_grpc.ReviewsStub(mesh.channel("reviews"))
    assert stub.Get(pb2.GetRequest(id=7), timeout=5) == pb2.Review(id=7, text="5 stars")
