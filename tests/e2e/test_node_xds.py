"""Node's ``@grpc/grpc-js-xds``, bootstrapped by `meshctl bootstrap`, as an outside judge.

The same shape as tests/e2e/test_native_grpc.py (C-core): the real control plane
process, real backends on loopback, and the client in a process of its own — here
tests/e2e/node/xds_client.js on the versions locked in tests/e2e/node/package-lock.json
(``make test`` installs them). Node and npm are required, not optional: without them
these tests fail and say so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import MESHCTL, ROOT, DriverProcess, driver_factory
from tests.e2e.mesh_files import policy_yaml, service_yaml, write_mesh

NODE_DIR = Path(__file__).parent / "node"
TARGET = "xds:///reviews.default.svc.cluster.local:50051"
CANARY = [["x-canary", "true"]]


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found on PATH: Node.js 20+ is needed for the grpc-js-xds tests")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js-xds").is_dir():
        pytest.fail(f"{NODE_DIR}/node_modules is missing: run `make test`, or "
                    f"`npm ci --prefix {NODE_DIR.relative_to(ROOT)}`")
    return node


class NodeClient(DriverProcess):
    """tests/e2e/node/xds_client.js in a subprocess."""

    def __init__(self, bootstrap: Path, log: Path) -> None:
        super().__init__([node_binary(), str(NODE_DIR / "xds_client.js")], log,
                         env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap)},
                         cwd=NODE_DIR, name="node client")

@pytest.fixture
def node_client_factory(tmp_path: Path) -> Iterator:
    yield from driver_factory(tmp_path, NodeClient, "node-client")


def validate(*bootstraps: Path) -> list[dict]:
    """grpc-js-xds's own bootstrap validation, one result per file."""
    out = subprocess.run([node_binary(), str(NODE_DIR / "validate_bootstrap.js"),
                          *map(str, bootstraps)],
                         capture_output=True, text=True, cwd=NODE_DIR, timeout=30, check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_every_bootstrap_form_passes_grpc_js_xds_validation(tmp_path):
    forms = {
        "plain": [],
        "zone": ["--zone", "zone-a"],
        "cluster": ["--cluster", "reviews", "--namespace", "shop"],
        "cert-dir": ["--cert-dir", str(tmp_path / "certs")],
    }
    files = []
    for name, args in forms.items():
        out = tmp_path / f"{name}.json"
        subprocess.run([*MESHCTL, "bootstrap", "--xds-address", "127.0.0.1:15010",
                        "--node-id", name, "--output", str(out), *args],
                       check=True, cwd=ROOT, timeout=60)
        files.append(out)
    # The check is live: the same file without node.locality is refused.
    doc = json.loads(files[0].read_text())
    del doc["node"]["locality"]
    (tmp_path / "no-locality.json").write_text(json.dumps(doc))

    *ours, old = validate(*files, tmp_path / "no-locality.json")
    assert all(r.get("ok") for r in ours), ours
    assert old["error"] == "locality field missing in node element", old


def test_node_follows_the_split_live_and_the_header_route(tmp_path, backends,
                                                          control_plane_factory,
                                                          node_client_factory):
    ports = {
        "reviews-v1": [backends("reviews-v1-a"), backends("reviews-v1-b")],
        "reviews-v2": [backends("reviews-v2-a")],
    }
    config = tmp_path / "mesh"
    header = ("x-canary", "true", "reviews-v2")
    write_mesh(config, ports, {"reviews-v1": 100, "reviews-v2": 0}, header=header)
    cp = control_plane_factory(config)
    client = node_client_factory(cp)

    first = client.send(op="wait_for", target=TARGET, backend="reviews-v1", timeout=10)
    assert first["ok"], first  # a refused bootstrap: UNAVAILABLE, then deadlines
    everything_v1 = client.send(op="calls", target=TARGET, n=200)
    assert everything_v1["errors"] == {}, everything_v1
    # 100/0 to v1, round robin over its two endpoints.
    assert set(everything_v1["counts"]) == {"reviews-v1-a", "reviews-v1-b"}, everything_v1
    assert abs(everything_v1["counts"]["reviews-v1-a"] - 100) <= 2, everything_v1

    canary = client.send(op="calls", target=TARGET, n=50, metadata=CANARY)
    assert canary == {"counts": {"reviews-v2-a": 50}, "errors": {}}, canary

    # Rewritten to 0/100: Node follows without a restart.
    write_mesh(config, ports, {"reviews-v1": 0, "reviews-v2": 100}, header=header)
    waited = client.send(op="wait_for", target=TARGET, backend="reviews-v2", timeout=10,
                         consecutive=20)
    assert waited["ok"], waited
    everything_v2 = client.send(op="calls", target=TARGET, n=200)
    assert everything_v2 == {"counts": {"reviews-v2-a": 200}, "errors": {}}, everything_v2

    # And a real split: 80/20 within a few points.
    write_mesh(config, ports, {"reviews-v1": 80, "reviews-v2": 20}, header=header)
    assert client.send(op="wait_for", target=TARGET, backend="reviews-v1", timeout=10)["ok"]
    time.sleep(0.2)
    split = client.send(op="calls", target=TARGET, n=1000)
    assert split["errors"] == {}, split
    v1 = sum(n for name, n in split["counts"].items() if name.startswith("reviews-v1"))
    assert abs(v1 / 1000 - 0.80) <= 0.05, split

    assert cp.metric("meshlib_xds_nacks_total") == 0
    for xds_type in ("LDS", "RDS", "CDS", "EDS"):
        assert cp.metric("meshlib_xds_acks_total", type=xds_type) >= 1


def test_node_accepts_and_applies_the_policies(tmp_path, backends, control_plane_factory,
                                               node_client_factory):
    """What docs/native-grpc.md says grpc-js-xds honours, checked."""
    ports = [backends("ring-a"), backends("ring-b")]
    config = tmp_path / "mesh"
    config.mkdir()
    (config / "services.yaml").write_text(
        service_yaml("ring", ports) + service_yaml("least", ports)
        + service_yaml("faulty", ports[:1]) + service_yaml("slow", ports[:1]))
    (config / "policies.yaml").write_text(
        policy_yaml("ring", "  loadBalancer: {type: RING_HASH, hashHeader: x-user}\n")
        + policy_yaml("least", "  loadBalancer: {type: LEAST_REQUEST, choiceCount: 2}\n")
        + policy_yaml("faulty", "  faultInjection: {abort: {percent: 100, "
                                "grpcStatus: RESOURCE_EXHAUSTED}}\n")
        + policy_yaml("slow", "  timeout: 200ms\n"
                              "  faultInjection: {delay: {percent: 100, fixedDelay: 2s}}\n"))
    cp = control_plane_factory(config)
    client = node_client_factory(cp)

    def calls(target: str, n: int, **kw: object) -> dict:
        return client.send(op="calls", target=f"xds:///{target}:50051", n=n,
                           wait_for_ready=True, **kw)

    # RING_HASH on a header: one key sticks to one backend; many keys spread.
    for user in ("alice", "bob", "carol"):
        sticky = calls("ring", 20, metadata=[["x-user", user]])
        assert len(sticky["counts"]) == 1 and sticky["errors"] == {}, sticky
    spread: set[str] = set()
    for i in range(30):
        spread |= set(calls("ring", 1, metadata=[["x-user", f"user-{i}"]])["counts"])
    assert spread == {"ring-a", "ring-b"}

    # LEAST_REQUEST: grpc-js-xds has no least_request policy; it takes round robin from
    # the policy list the control plane sends.
    least = calls("least", 40)
    assert least["errors"] == {} and set(least["counts"]) == {"ring-a", "ring-b"}, least

    assert calls("faulty", 10)["errors"] == {"RESOURCE_EXHAUSTED": 10}

    # The route timeout (200 ms) cuts the injected 2 s delay.
    started = time.monotonic()
    assert calls("slow", 3)["errors"] == {"DEADLINE_EXCEEDED": 3}
    assert 3 * 0.2 <= time.monotonic() - started < 3 * 1.0

    assert cp.metric("meshlib_xds_nacks_total") == 0
