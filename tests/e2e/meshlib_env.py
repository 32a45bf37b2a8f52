"""A mesh for meshlib client tests: real backends, the real control plane process,
and a :class:`meshlib.Mesh` pointed at it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import meshlib
from tests.e2e.mesh_files import write_mesh
from tests.e2e.meshlib_backends import Backend


@dataclass
class MeshEnv:
    """Backends by version, the control plane, the config directory, and a Mesh."""

    directory: Path
    backends: dict[str, list[Backend]]
    cp: Any  # conftest.ControlPlaneProc
    mesh: meshlib.Mesh
    meshes: list[meshlib.Mesh] = field(default_factory=list)

    def write(self, weights: Mapping[str, int] | None = None, *,
              header: tuple[str, str, str] | None = None, extra: str = "") -> None:
        """Rewrite the mesh config (the control plane reloads it)."""
        ports = {name: [b.port for b in group] for name, group in self.backends.items()}
        write_mesh(self.directory, ports, weights, header=header, extra=extra)

    def new_mesh(self, **kwargs: object) -> meshlib.Mesh:
        mesh = meshlib.Mesh(xds_address=self.cp.xds_address, **kwargs)  # type: ignore[arg-type]
        self.meshes.append(mesh)
        return mesh


@pytest.fixture
def mesh_env(tmp_path: Path, control_plane_factory) -> Iterator:
    """``start(backends={"reviews-v1": 2, ...}, weights=..., extra=policy YAML)``."""
    envs: list[MeshEnv] = []
    started: list[Backend] = []

    def start(versions: Mapping[str, int | Sequence[Backend]],
              weights: Mapping[str, int] | None = None, *,
              header: tuple[str, str, str] | None = None, extra: str = "") -> MeshEnv:
        backends: dict[str, list[Backend]] = {}
        for name, spec in versions.items():
            group = ([Backend(f"{name}-{i}") for i in range(spec)] if isinstance(spec, int)
                     else list(spec))
            for backend in group:
                if backend.server is None:
                    backend.start()
                    started.append(backend)
            backends[name] = group
        directory = tmp_path / f"mesh-{len(envs)}"
        ports = {name: [b.port for b in group] for name, group in backends.items()}
        write_mesh(directory, ports, weights, header=header, extra=extra)
        cp = control_plane_factory(directory)
        mesh = meshlib.Mesh(xds_address=cp.xds_address, node_id=f"test-{len(envs)}",
                            service="frontend", close_grace=0.5)
        env = MeshEnv(directory, backends, cp, mesh, [mesh])
        envs.append(env)
        return env

    yield start
    for env in envs:
        for mesh in env.meshes:
            mesh.close()
    for backend in started:
        backend.stop()
