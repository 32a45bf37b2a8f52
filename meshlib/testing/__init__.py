"""Testing services in the mesh: an in-process control plane, services, faults, a CA.

The pytest plugin (:mod:`meshlib.testing.plugin`, loaded by pytest through the
``pytest11`` entry point) offers these as fixtures; the classes work without pytest
too. :mod:`meshlib.testing.config` builds the config objects. See docs/testing.md.

Example::

    from meshlib.testing import config as c

    def test_canary(mesh_control_plane, mesh_service, mesh):
        mesh_service("reviews", {"/demo.Reviews/Get": lambda r, ctx: b"v1"}, version="v1")
        mesh_service("reviews", {"/demo.Reviews/Get": lambda r, ctx: b"v2"}, version="v2")
        mesh_control_plane.apply(c.split("reviews", {"reviews-v1": 0, "reviews-v2": 100}))
        mesh_control_plane.wait_synced()
        get = mesh.channel("reviews").unary_unary("/demo.Reviews/Get")
        assert get(b"", timeout=5) == b"v2"
"""

from meshlib.testing import config
from meshlib.testing._clock import FakeClock
from meshlib.testing._control_plane import (
    DEFAULT_SYNC_TIMEOUT,
    MeshCA,
    MeshControlPlane,
    NotSyncedError,
)
from meshlib.testing._faults import MeshFaults
from meshlib.testing._services import MeshService, MeshServices, Replica

__all__ = [
    "DEFAULT_SYNC_TIMEOUT",
    "FakeClock",
    "MeshCA",
    "MeshControlPlane",
    "MeshFaults",
    "MeshService",
    "MeshServices",
    "NotSyncedError",
    "Replica",
    "config",
]
