"""The file watcher sees plain edits, symlinked files and ConfigMap-style swaps."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from xds_server.sources.file_watcher import watch_model
from xds_server.sources.yaml_loader import ConfigLoader

SERVICE = """apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: grpc, port: 50051}}]
"""


async def next_change(path: Path, loader: ConfigLoader, edit, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    stop = asyncio.Event()
    changes = watch_model(path, loader=loader, stop_event=stop, poll_interval=0.5)

    async def first():  # type: ignore[no-untyped-def]
        async for change in changes:
            return change
        return None

    task = asyncio.create_task(first())
    await asyncio.sleep(0.3)  # let the watch start
    edit()
    try:
        return await asyncio.wait_for(task, timeout)
    finally:
        stop.set()


def names(change) -> set[str]:  # type: ignore[no-untyped-def]
    return {s.name for s in change.model.services}


async def test_plain_edit_in_a_directory(tmp_path):
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="a"))
    loader = ConfigLoader(tmp_path)
    loader.load()
    change = await next_change(
        tmp_path, loader, lambda: (tmp_path / "b.yaml").write_text(SERVICE.format(name="b")))
    assert names(change) == {"a", "b"}


async def test_invalid_edit_is_reported_not_applied(tmp_path):
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="a"))
    loader = ConfigLoader(tmp_path)
    loader.load()
    change = await next_change(tmp_path, loader,
                               lambda: (tmp_path / "a.yaml").write_text("kind: Nope\n"))
    assert change.model is None and change.problems


async def test_symlinked_file_whose_target_is_edited(tmp_path):
    real = tmp_path / "elsewhere"
    real.mkdir()
    (real / "mesh.yaml").write_text(SERVICE.format(name="a"))
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").symlink_to(real / "mesh.yaml")
    loader = ConfigLoader(config / "mesh.yaml")
    loader.load()
    change = await next_change(config / "mesh.yaml", loader,
                               lambda: (real / "mesh.yaml").write_text(SERVICE.format(name="c")))
    assert names(change) == {"c"}


async def test_configmap_style_symlink_swap(tmp_path):
    """kubelet: mesh.yaml -> ..data/mesh.yaml, ..data -> ..v1; an update swaps ..data."""
    mount = tmp_path / "mount"
    (mount / "..v1").mkdir(parents=True)
    (mount / "..v1" / "mesh.yaml").write_text(SERVICE.format(name="v1"))
    (mount / "..data").symlink_to("..v1")
    (mount / "mesh.yaml").symlink_to("..data/mesh.yaml")
    loader = ConfigLoader(mount)
    loader.load()

    def swap() -> None:
        (mount / "..v2").mkdir()
        (mount / "..v2" / "mesh.yaml").write_text(SERVICE.format(name="v2"))
        (mount / "..data_tmp").symlink_to("..v2")
        os.rename(mount / "..data_tmp", mount / "..data")

    change = await next_change(mount, loader, swap)
    assert names(change) == {"v2"}


async def test_unchanged_content_does_not_reload(tmp_path):
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="a"))
    loader = ConfigLoader(tmp_path)
    loader.load()
    assert not loader.changed()
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="a"))  # same bytes
    (tmp_path / ".a.yaml.swp").write_text("junk")  # hidden: ignored
    assert not loader.changed()
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="z"))
    assert loader.changed()
