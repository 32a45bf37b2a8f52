"""The pytest plugin (entry point ``pytest11``: ``meshlib``): fixtures for testing a
service in a real mesh, on loopback, in-process.

Fixtures (each function-scoped, torn down after the test):

* ``mesh_control_plane`` — a :class:`~meshlib.testing.MeshControlPlane`: the real
  control plane on a free port, fed with ``apply(...)`` / ``delete(...)``.
* ``mesh`` — a :class:`~meshlib.Mesh` client connected to it (service
  ``test-client``); ``mesh_control_plane.mesh(...)`` makes more.
* ``mesh_service`` — start a gRPC service in the mesh: ``mesh_service(name,
  handlers, replicas=N, version=...)``; ``mesh_service.http(name, app)`` for ASGI/WSGI.
* ``mesh_faults`` — inject delays and aborts into a service live, restored after.
* ``mesh_ca`` — the control plane's CA: tokens, identities, the root.
* ``fake_clock`` — a :class:`~meshlib.testing.FakeClock`.

Importing this module imports neither gRPC nor the control plane: pytest loads it in
every run of a project that has meshlib installed, so it stays cheap until a fixture
is used. See docs/testing.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from meshlib import Mesh
    from meshlib.testing import FakeClock, MeshCA, MeshControlPlane, MeshFaults, MeshServices


@pytest.fixture
def mesh_control_plane() -> Iterator[MeshControlPlane]:
    """The mesh's control plane, in-process on ``127.0.0.1:<free port>``, empty until
    the test applies config; it closes every Mesh it made at teardown."""
    from meshlib.testing import MeshControlPlane

    control_plane = MeshControlPlane()
    try:
        yield control_plane
    finally:
        control_plane.close()


@pytest.fixture
def mesh(mesh_control_plane: MeshControlPlane) -> Mesh:
    """A Mesh (service ``test-client``) connected to ``mesh_control_plane``: call
    services with ``mesh.channel(...)``, ``mesh.aio_channel(...)`` or
    ``mesh.http_client()``."""
    return mesh_control_plane.mesh("test-client")


@pytest.fixture
def mesh_service(mesh_control_plane: MeshControlPlane) -> Iterator[MeshServices]:
    """``mesh_service(name, handlers, replicas=1, version=None, ...)`` serves a gRPC
    service in the mesh and registers its Service and EndpointSlices;
    ``mesh_service.http(name, app, ...)`` an ASGI/WSGI app."""
    from meshlib.testing import MeshServices

    services = MeshServices(mesh_control_plane)
    try:
        yield services
    finally:
        services.close()


@pytest.fixture
def mesh_faults(mesh_control_plane: MeshControlPlane) -> Iterator[MeshFaults]:
    """Delays and aborts injected through TrafficPolicy, removed at teardown."""
    from meshlib.testing import MeshFaults

    faults = MeshFaults(mesh_control_plane)
    yield faults
    faults.clear()


@pytest.fixture
def mesh_ca(mesh_control_plane: MeshControlPlane) -> MeshCA:
    """The control plane's CA: ``mesh_ca.token("frontend")`` for a Mesh's
    ``token=``, ``mesh_ca.identity("frontend")``, ``mesh_ca.root_pem``."""
    return mesh_control_plane.ca


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock that moves only when told (``advance``) or slept on (``sleep``)."""
    from meshlib.testing import FakeClock

    return FakeClock()
