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


def test_a_fault_delay_longer_than_the_deadline_ends_at_the_deadline(mesh_service,
                                                                      mesh_faults, mesh):
    """gRFC A33: the caller's deadline fires during an injected delay."""
    mesh_service("reviews", {GET: lambda request, context: b"ok"})
    mesh_faults.delay("reviews", 2.0)
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        mesh.channel("reviews").unary_unary(GET)(b"", timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 1.0


def test_faults_find_the_policy_by_its_target_and_clear_only_the_faults(
        mesh_control_plane, mesh_service, mesh_faults, mesh):
    mesh_service("ratings", {GET: lambda request, context: b"ratings"})
    mesh_service("reviews", {GET: lambda request, context: b"reviews"})
    # A policy *named* reviews that targets ratings, and reviews' own, named otherwise.
    mesh_control_plane.apply(c.traffic_policy("ratings", name="reviews", timeout="2s"),
                             c.traffic_policy("reviews", name="reviews-tp", timeout="2s"))
    mesh_faults.unavailable("reviews")
    with pytest.raises(grpc.RpcError):
        mesh.channel("reviews").unary_unary(GET)(b"", timeout=5)
    assert mesh.channel("ratings").unary_unary(GET)(b"", timeout=5) == b"ratings"

    # An edit made while the fault is on stays when it is cleared.
    edited = mesh_control_plane.get("TrafficPolicy", "reviews-tp")
    edited["spec"]["timeout"] = "5s"
    mesh_control_plane.apply(edited)
    mesh_faults.clear("reviews")
    assert mesh_control_plane.get("TrafficPolicy", "reviews-tp")["spec"] == {
        "targetRef": {"group": "", "kind": "Service", "name": "reviews"}, "timeout": "5s"}
    assert mesh.channel("reviews").unary_unary(GET)(b"", timeout=5) == b"reviews"


def test_a_fault_on_an_unknown_service_is_one_error(mesh_faults):
    from meshlib.contract import ConfigError

    with pytest.raises(ConfigError, match="nope"):
        mesh_faults.abort("nope")
    mesh_faults.clear()  # what teardown does: nothing to undo


def test_a_service_the_test_applied_is_kept(mesh_control_plane, mesh_service, mesh):
    mesh_control_plane.apply(c.service("reviews", port=9000, service_account="reviews-sa",
                                       port_name="api"))
    reviews = mesh_service("reviews", {GET: lambda request, context: b"ok"}, replicas=2)
    kept = mesh_control_plane.get("Service", "reviews")
    assert kept["spec"]["ports"][0]["port"] == 9000
    assert kept["metadata"]["annotations"] == {"meshlib.dev/service-account": "reviews-sa"}
    assert reviews.port == 9000 and reviews.mesh.settings.service_account == "reviews-sa"
    assert mesh.channel("reviews:9000").unary_unary(GET)(b"", timeout=5) == b"ok"
    reviews.remove(reviews.replicas[0])
    assert mesh_control_plane.get("Service", "reviews") == kept
    assert reviews.calls == 1


def test_closing_the_control_plane_stops_its_services():
    import socket

    from meshlib.testing import MeshServices

    cp = MeshControlPlane()
    services = MeshServices(cp)
    port = services("reviews", {GET: lambda request, context: b"ok"}).replicas[0].port
    cp.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # free again
