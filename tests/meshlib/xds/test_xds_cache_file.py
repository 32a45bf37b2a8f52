"""The cache file of the last good config: format, tolerant reading, atomic 0600 writes,
debounced writer. No sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import stat
from types import MappingProxyType

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from meshlib.xds import CLUSTER, CachedResource, decode_cluster
from meshlib.xds._persist import (
    CacheContents,
    CacheWriter,
    dumps,
    loads,
    read_cache,
    write_atomic,
)
from tests.meshlib.xds.xds_models import V1, V2, pack


def _contents(canary, *names: str, namespace: str = "default") -> CacheContents:  # type: ignore[no-untyped-def]
    entries = []
    for i, name in enumerate(names):
        resource = pack(canary[CLUSTER][name])
        entries.append(CachedResource(name, decode_cluster(resource), f"r{i}", resource))
    return CacheContents(namespace=namespace, node_id="n1", server_address="cp:1",
                         resources=MappingProxyType({CLUSTER: tuple(entries)}),
                         version_info=MappingProxyType({CLUSTER: "v9"}))


def test_round_trip_keeps_resources_versions_and_version_info(canary):
    contents = _contents(canary, V2, V1)
    data = dumps(contents)
    assert data == dumps(_contents(canary, V2, V1))  # deterministic
    doc = json.loads(data)
    assert (doc["format"], doc["version"], doc["namespace"]) == ("meshlib.xds.cache", 1,
                                                                 "default")
    back = loads(data)
    assert [e.name for e in back.resources[CLUSTER]] == [V1, V2]  # sorted by name
    assert {e.name: e.version for e in back.resources[CLUSTER]} == {V2: "r0", V1: "r1"}
    assert back.version_info == {CLUSTER: "v9"} and len(back) == 2
    assert back.resources[CLUSTER][0].update == decode_cluster(pack(canary[CLUSTER][V1]))
    assert back.resources[CLUSTER][0].resource == pack(canary[CLUSTER][V1])


def test_invalid_resources_and_unknown_types_are_skipped_with_a_warning(canary, caplog):
    doc = json.loads(dumps(_contents(canary, V1, V2)))
    bad = pack(cluster_pb2.Cluster(name=V2, type=cluster_pb2.Cluster.STATIC))
    doc["types"][0]["resources"][1]["resource"] = base64.b64encode(
        bad.SerializeToString()).decode()
    doc["types"][0]["resources"].append({"name": "x", "version": "", "resource": "!!"})
    doc["types"].append({"type_url": "type.googleapis.com/nope.Nope", "version_info": "",
                         "resources": []})
    with caplog.at_level(logging.WARNING, "meshlib.xds._persist"):
        back = loads(json.dumps(doc).encode())
    assert [e.name for e in back.resources[CLUSTER]] == [V1]
    text = caplog.text
    assert "STATIC" in text and "'x' cannot be read" in text and "nope.Nope" in text


@pytest.mark.parametrize("data", [
    b"", b"\xff\xfe", b"[]", b'{"format": "other"}',
    b'{"format": "meshlib.xds.cache", "version": 99}',
    b'{"format": "meshlib.xds.cache", "version": 1, "types": {}}',
    b'{"format": "meshlib.xds.cache", "version": 1, "types": [{"type_url": 3}]}',
])
def test_corrupt_file_is_logged_and_ignored(tmp_path, caplog, data):
    path = tmp_path / "xds.json"
    path.write_bytes(data)
    with caplog.at_level(logging.WARNING, "meshlib.xds._persist"):
        assert read_cache(path, namespace="default") is None
    assert "corrupt" in caplog.text


def test_missing_file_other_namespace_and_unreadable_path(tmp_path, canary, caplog):
    assert read_cache(tmp_path / "none.json", namespace="default") is None
    path = tmp_path / "xds.json"
    path.write_bytes(dumps(_contents(canary, V1, namespace="shop")))
    with caplog.at_level(logging.WARNING, "meshlib.xds._persist"):
        assert read_cache(path, namespace="default") is None
        assert read_cache(tmp_path, namespace="default") is None  # a directory
    assert "namespace 'shop'" in caplog.text and "cannot be read" in caplog.text
    assert read_cache(path, namespace="shop") is not None


def test_write_is_atomic_private_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "xds.json"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(path.parent) == ["xds.json"]


async def test_writer_debounces_skips_equal_bytes_and_writes_last_on_close(tmp_path, canary):
    path = tmp_path / "xds.json"
    calls: list[bool] = []
    current = {"names": (V1,)}

    def contents(final: bool) -> CacheContents:
        calls.append(final)
        return _contents(canary, *current["names"])

    writer = CacheWriter(path, contents, interval=0.1)
    writer.changed()
    writer.changed()  # coalesced with the first
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert calls == [False]
    assert [e.name for e in loads(path.read_bytes()).resources[CLUSTER]] == [V1]
    current["names"] = (V1, V2)
    writer.changed()  # within the interval: waits for it
    await asyncio.sleep(0.02)
    assert calls == [False]
    await asyncio.sleep(0.12)
    assert calls == [False, False] and len(loads(path.read_bytes())) == 2
    writer.close()  # nothing changed since: no write
    assert calls == [False, False]
    writer.changed()
    mtime = path.stat().st_mtime_ns
    os.utime(path, ns=(1, 1))
    writer.close()  # changed: a final write, but the same bytes are not written again
    assert calls == [False, False, True] and path.stat().st_mtime_ns == 1 != mtime


async def test_writer_logs_a_failing_path_once(tmp_path, caplog, canary):
    (tmp_path / "file").write_text("not a directory")
    writer = CacheWriter(tmp_path / "file" / "xds.json", lambda final: _contents(canary, V1),
                         interval=0)
    with caplog.at_level(logging.WARNING, "meshlib.xds._persist"):
        writer.changed()
        await asyncio.sleep(0.01)
        writer.changed()
        await asyncio.sleep(0.01)
        writer.close()
    assert caplog.text.count("cannot write the xDS cache file") == 1

