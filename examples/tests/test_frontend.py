"""Testing a service in the mesh with meshlib's pytest fixtures (docs/testing.md).

Every test runs the real control plane in-process, real gRPC servers on loopback and
the frontend's real Mesh client; nothing is mocked. pytest finds the fixtures through
meshlib's ``pytest11`` entry point: no conftest is needed.
"""

from __future__ import annotations

import grpc
import pytest

from examples.frontend import METHOD, UNAVAILABLE, Frontend
from meshlib.testing import config as c


def answer(text: str):
    """A reviews handler that always answers ``text``."""
    return {METHOD: lambda request, context: text.encode()}


def test_retries_hide_a_flaky_reviews(mesh_control_plane, mesh_service, mesh):
    failures = iter([True, True])  # the first two calls fail

    def flaky(request, context):
        if next(failures, False):
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return b"5 stars"

    reviews = mesh_service("reviews", {METHOD: flaky})
    mesh_control_plane.apply(c.traffic_policy(
        "reviews", retries={"attempts": 3, "retryOn": ["UNAVAILABLE"]}))
    mesh_control_plane.wait_synced()

    assert Frontend(mesh).reviews(1) == "5 stars"
    assert reviews.calls == 3


def test_canary_testers_get_v2_and_everyone_else_v1(mesh_control_plane, mesh_service, mesh):
    mesh_service("reviews", answer("v1"), version="v1", replicas=2)
    mesh_service("reviews", answer("v2"), version="v2")
    mesh_control_plane.apply(c.grpc_route(
        "reviews",
        c.rule("reviews-v2", headers={"x-canary": "true"}),
        c.rule({"reviews-v1": 100, "reviews-v2": 0})))
    mesh_control_plane.wait_synced()
    frontend = Frontend(mesh)

    assert {frontend.reviews(i) for i in range(10)} == {"v1"}
    assert frontend.reviews(1, canary=True) == "v2"


def test_only_the_frontend_may_call_reviews(mesh_control_plane, mesh_service, mesh_ca):
    mesh_control_plane.apply(
        c.service("reviews"),
        c.access_policy("reviews", c.allow(service_accounts=["default/frontend"]),
                        mode="STRICT"))
    mesh_service("reviews", answer("5 stars"), identity=True)

    frontend = mesh_control_plane.mesh("frontend", identity=True)
    assert Frontend(frontend).reviews(1) == "5 stars"

    stranger = mesh_control_plane.mesh("stranger", identity=True)
    with pytest.raises(grpc.RpcError) as err:
        Frontend(stranger).reviews(1)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_frontend_degrades_while_reviews_is_down(mesh_service, mesh_faults, mesh):
    mesh_service("reviews", answer("5 stars"))
    frontend = Frontend(mesh)

    mesh_faults.unavailable("reviews")
    assert frontend.reviews(1) == UNAVAILABLE

    mesh_faults.clear("reviews")
    assert frontend.reviews(1) == "5 stars"


def test_a_slow_reviews_is_cut_off_by_the_route_timeout(
        mesh_control_plane, mesh_service, mesh_faults, mesh):
    mesh_service("reviews", answer("5 stars"))
    mesh_control_plane.apply(c.traffic_policy("reviews", timeout="100ms"))
    mesh_faults.delay("reviews", 1.0)

    assert Frontend(mesh).reviews(1, timeout=5.0) == UNAVAILABLE


@pytest.mark.asyncio
async def test_async_callers(mesh_service, mesh):
    mesh_service("reviews", answer("5 stars"))
    get = mesh.aio_channel("reviews").unary_unary(METHOD)
    assert await get(b"1", timeout=5) == b"5 stars"
