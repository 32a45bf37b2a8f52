"""gRPC's native xDS client, bootstrapped by `meshctl bootstrap`, as the outside judge.

The control plane is the real `meshctl control-plane` process reading files; the
backends are real gRPC servers on loopback; the client is grpcio's own xDS client.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import ROOT, free_port, stop_process
from tests.e2e.mesh_files import route_yaml, service_yaml, write_mesh

TARGET = "xds:///reviews.default.svc.cluster.local:50051"


def share(result: dict, prefix: str) -> float:
    counts = result["counts"]
    total = sum(counts.values())
    return sum(n for name, n in counts.items() if name.startswith(prefix)) / total


@pytest.fixture
def mesh(tmp_path, backends, control_plane_factory, native_client_factory):
    """reviews-v1 (two endpoints) and reviews-v2 (one), a 90/10 route with a header rule."""
    ports = {
        "reviews-v1": [backends("reviews-v1-a"), backends("reviews-v1-b")],
        "reviews-v2": [backends("reviews-v2-a")],
    }
    config = tmp_path / "mesh"
    write_mesh(config, ports, {"reviews-v1": 90, "reviews-v2": 10},
               header=("x-canary", "true", "reviews-v2"))
    cp = control_plane_factory(config)
    client = native_client_factory(cp)
    return config, ports, cp, client


def test_weighted_split_and_header_match(mesh):
    _, _, cp, client = mesh
    result = client.send(op="calls", target=TARGET, n=4000, wait_for_ready=True)
    assert result["errors"] == {}
    assert abs(share(result, "reviews-v1") - 0.90) <= 0.03, result
    assert abs(share(result, "reviews-v2") - 0.10) <= 0.03, result

    canary = client.send(op="calls", target=TARGET, n=200, metadata=[["x-canary", "true"]])
    assert canary["counts"] == {"reviews-v2-a": 200}, canary
    assert cp.metric("meshlib_xds_nacks_total") == 0


def test_round_robin_spreads_over_endpoints(mesh):
    _, _, _, client = mesh
    result = client.send(op="calls", target="xds:///reviews-v1.default.svc.cluster.local:50051",
                         n=400, wait_for_ready=True)
    assert result["errors"] == {}
    # Round robin over two endpoints: an even split, give or take the first pick.
    assert set(result["counts"]) == {"reviews-v1-a", "reviews-v1-b"}
    assert abs(result["counts"]["reviews-v1-a"] - 200) <= 2, result


@pytest.mark.parametrize("target", [
    "xds:///reviews-v2",
    "xds:///reviews-v2:50051",
    "xds:///reviews-v2.default",
    "xds:///reviews-v2.default:50051",
    "xds:///reviews-v2.default.svc.cluster.local",
])
def test_every_target_form_resolves(mesh, target):
    _, _, _, client = mesh
    result = client.send(op="calls", target=target, n=5, wait_for_ready=True, timeout=10)
    assert result["counts"] == {"reviews-v2-a": 5}, result


def test_unknown_service_fails_fast(mesh):
    _, _, _, client = mesh
    started = time.monotonic()
    result = client.send(op="calls", target="xds:///nope.default.svc.cluster.local:50051", n=1,
                         timeout=20)
    assert result["errors"] == {"UNAVAILABLE": 1}, result
    # The server says "no such listener" at once; gRPC would otherwise wait 15 s.
    assert time.monotonic() - started < 5


def test_editing_yaml_shifts_split_live(mesh):
    config, ports, cp, client = mesh
    client.send(op="calls", target=TARGET, n=50, wait_for_ready=True)
    pushes_before = cp.metric("meshlib_xds_pushes_total")
    written = time.monotonic()
    write_mesh(config, ports, {"reviews-v1": 0, "reviews-v2": 100})
    # The route changed only: the client sees it without reconnecting or restarting.
    # The old split sends 10 % to v2 too: wait for a run of v2 answers, not one.
    waited = client.send(op="wait_for", target=TARGET, backend="reviews-v2", timeout=10,
                         consecutive=20)
    assert waited["ok"], waited
    result = client.send(op="calls", target=TARGET, n=300)
    assert result["counts"] == {"reviews-v2-a": 300}, result
    assert cp.metric("meshlib_xds_pushes_total") > pushes_before
    assert time.monotonic() - written < 10

    write_mesh(config, ports, {"reviews-v1": 50, "reviews-v2": 50})
    assert client.send(op="wait_for", target=TARGET, backend="reviews-v1", timeout=10)["ok"]
    time.sleep(0.2)
    result = client.send(op="calls", target=TARGET, n=2000)
    assert abs(share(result, "reviews-v1") - 0.5) <= 0.04, result


def test_invalid_edit_keeps_last_good_config(mesh):
    config, _, cp, client = mesh
    assert client.send(op="calls", target=TARGET, n=20, wait_for_ready=True)["errors"] == {}
    reloads_invalid = cp.metric("meshlib_config_reloads_total", result="invalid")
    (config / "broken.yaml").write_text(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\n"
        "metadata: {name: broken, namespace: default}\n"
        "spec:\n  parentRefs: [{kind: Service, name: reviews}]\n"
        "  rules: [{backendRefs: [{name: does-not-exist, port: 50051}]}]\n"
    )
    deadline = time.monotonic() + 10
    while cp.metric("meshlib_config_reloads_total", result="invalid") <= reloads_invalid:
        assert time.monotonic() < deadline, cp.log.read_text()
        time.sleep(0.05)
    result = client.send(op="calls", target=TARGET, n=500)
    assert result["errors"] == {}
    assert abs(share(result, "reviews-v1") - 0.90) <= 0.05
    assert "does-not-exist" in cp.log.read_text()
    assert cp.proc.poll() is None


def test_xds_enabled_server_gets_its_listener(tmp_path, control_plane_factory,
                                              native_client_factory):
    """`grpc.server(..., xds=True)` serves once the control plane sends its listener."""
    port = free_port()
    config = tmp_path / "mesh"
    config.mkdir()
    (config / "services.yaml").write_text(service_yaml("reviews-xds", [port]))
    cp = control_plane_factory(config)
    bootstrap = cp.bootstrap(tmp_path / "server.json", "reviews-xds-0")
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "reviews_server.py"), "--xds",
         "--name", "reviews-xds-0", "--host", "0.0.0.0", "--port", str(port)],
        env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        client = native_client_factory(cp)
        result = client.send(op="wait_for", target="xds:///reviews-xds:50051",
                             backend="reviews-xds-0", timeout=20)
        assert result["ok"], result
        # The server asked for its listener by the template name, and got it.
        status, dump = cp.admin("/debug/config_dump?node=reviews-xds-0")
        assert status == 200
        assert f"grpc/server?xds.resource.listening_address=0.0.0.0:{port}" in dump
    finally:
        stop_process(server)


def test_route_file_alone_can_be_added_and_removed(mesh):
    config, _, _, client = mesh
    (config / "routes.yaml").unlink()
    # No route attached: reviews is plain round robin over its own three endpoints. (A
    # canary call reaching v1 proves it: the header rule sent every one of them to v2.)
    assert client.send(op="wait_for", target=TARGET, backend="reviews-v1", timeout=10,
                       metadata=[["x-canary", "true"]])["ok"]
    canary = client.send(op="calls", target=TARGET, n=30, metadata=[["x-canary", "true"]])
    assert len(canary["counts"]) == 3, canary
    (config / "routes.yaml").write_text(route_yaml("reviews", {"reviews-v2": 1}))
    assert client.send(op="wait_for", target=TARGET, backend="reviews-v2", timeout=10,
                       consecutive=20)["ok"]
    time.sleep(0.2)
    assert client.send(op="calls", target=TARGET, n=30)["counts"] == {"reviews-v2-a": 30}



def policy_yaml(target: str, spec: str) -> str:
    return f"""---
apiVersion: meshlib.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: {target}, namespace: default}}
spec:
  targetRef: {{kind: Service, name: {target}}}
{spec}"""


def test_native_grpc_accepts_and_applies_every_policy(tmp_path, backends, control_plane_factory,
                                                      native_client_factory):
    """Every TrafficPolicy feature, as translated, is ACKed by gRPC and takes effect."""
    ports = [backends("ring-a"), backends("ring-b")]
    config = tmp_path / "mesh"
    config.mkdir()
    (config / "services.yaml").write_text(
        service_yaml("ring", ports) + service_yaml("least", ports)
        + service_yaml("faulty", ports[:1]) + service_yaml("tuned", ports[:1]))
    (config / "policies.yaml").write_text(
        policy_yaml("ring", "  loadBalancer: {type: RING_HASH, hashHeader: x-user}\n")
        + policy_yaml("least", "  loadBalancer: {type: LEAST_REQUEST, choiceCount: 2}\n")
        + policy_yaml("faulty", "  faultInjection: {abort: {percent: 100, "
                                "grpcStatus: RESOURCE_EXHAUSTED}}\n")
        + policy_yaml("tuned", """  timeout: 2s
  retries: {attempts: 3, perTryTimeout: 500ms, retryOn: [UNAVAILABLE, CANCELLED],
            backoff: {baseInterval: 10ms, maxInterval: 100ms}}
  circuitBreaker: {maxConcurrentRequests: 100}
  outlierDetection: {consecutiveFailures: 5, failurePercentageThreshold: 50,
                     failurePercentageRequestVolume: 10}
  faultInjection: {delay: {percent: 100, fixedDelay: 50ms}}
"""))
    cp = control_plane_factory(config)
    client = native_client_factory(cp)

    def calls(target: str, n: int, **kw: object) -> dict:
        return client.send(op="calls", target=f"xds:///{target}:50051", n=n,
                           wait_for_ready=True, **kw)

    # RING_HASH on a header: one key sticks to one backend; many keys spread.
    for user in ("alice", "bob", "carol"):
        sticky = calls("ring", 30, metadata=[["x-user", user]])
        assert len(sticky["counts"]) == 1 and sticky["errors"] == {}, sticky
    spread = set()
    for i in range(40):
        spread |= set(calls("ring", 1, metadata=[["x-user", f"user-{i}"]])["counts"])
    assert spread == {"ring-a", "ring-b"}

    least = calls("least", 40)
    assert least["errors"] == {} and set(least["counts"]) == {"ring-a", "ring-b"}

    faulty = calls("faulty", 10)
    assert faulty["errors"] == {"RESOURCE_EXHAUSTED": 10}, faulty

    started = time.monotonic()
    tuned = calls("tuned", 10)
    assert tuned["counts"] == {"ring-a": 10}, tuned
    assert time.monotonic() - started >= 10 * 0.05  # the injected 50 ms delay applies

    assert cp.metric("meshlib_xds_nacks_total") == 0
    for xds_type in ("LDS", "RDS", "CDS", "EDS"):
        assert cp.metric("meshlib_xds_acks_total", type=xds_type) >= 1
