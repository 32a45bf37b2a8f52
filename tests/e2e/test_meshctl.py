"""`meshctl check`, `meshctl bootstrap` and the admin endpoints, as a user runs them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from importlib.metadata import entry_points

from tests.e2e.conftest import MESHCTL, ROOT, free_port
from tests.e2e.mesh_files import write_mesh


def meshctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MESHCTL, *args], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_check_accepts_the_examples():
    result = meshctl("check", "examples/mesh")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout


def test_python_m_meshctl_and_the_installed_script_are_the_same_cli():
    result = subprocess.run([sys.executable, "-m", "meshctl", "check", "examples/mesh"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "meshctl"]
    assert script.value == "meshctl.cli:main"


def test_check_rejects_invalid_config_one_line_per_problem():
    result = meshctl("check", "examples/invalid")
    assert result.returncode == 1
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) >= 2
    for line in lines:
        # file: Kind namespace/name: field: message
        assert line.startswith("examples/invalid/"), line
        assert line.count(": ") >= 2, line


def test_bootstrap_is_what_grpc_expects(tmp_path):
    out = tmp_path / "bootstrap.json"
    result = meshctl("bootstrap", "--xds-address", "127.0.0.1:15010", "--node-id", "a-1",
                     "--namespace", "shop", "--zone", "zone-a", "--output", str(out))
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    assert doc["xds_servers"] == [{"server_uri": "127.0.0.1:15010",
                                   "channel_creds": [{"type": "insecure"}],
                                   "server_features": ["xds_v3"]}]
    assert doc["node"]["id"] == "a-1"
    assert doc["node"]["metadata"]["NAMESPACE"] == "shop"
    assert doc["node"]["locality"] == {"zone": "zone-a"}
    assert "%s" in doc["server_listener_resource_name_template"]


def test_admin_endpoints(tmp_path, backends, control_plane_factory, native_client_factory):
    config = tmp_path / "mesh"
    write_mesh(config, {"reviews-v1": [backends("reviews-v1-a")]})
    cp = control_plane_factory(config)
    assert cp.admin("/healthz") == (200, "ok\n")
    assert cp.admin("/readyz")[0] == 200
    client = native_client_factory(cp, node_id="dumped-node")
    assert client.send(op="calls", target="xds:///reviews-v1:50051", n=3,
                       wait_for_ready=True)["errors"] == {}
    status, body = cp.admin("/debug/config_dump?node=dumped-node")
    assert status == 200
    dump = json.loads(body)
    assert dump["node"] == "dumped-node"
    assert set(dump["resources"]) >= {"LDS", "RDS", "CDS", "EDS"}
    assert cp.admin("/debug/config_dump?node=nobody")[0] == 404
    assert cp.metric("meshlib_xds_connected_clients", kind="grpc") == 1
    assert cp.metric("meshlib_xds_pushes_total") >= 4
    _, text = cp.admin("/metrics")
    assert "meshlib_xds_push_latency_seconds_bucket" in text


def test_demo_runs_both_clients_and_the_split_follows_the_edit():
    out = subprocess.run([*MESHCTL, "demo", "--seconds", "6"], cwd=ROOT, capture_output=True,
                         text=True, timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    meshlib_lines = [line for line in out.stdout.splitlines() if "meshlib |" in line]
    native_lines = [line for line in out.stdout.splitlines() if "native |" in line]
    assert len(meshlib_lines) >= 3 and len(native_lines) >= 3, out.stdout
    assert "0 errors so far" in meshlib_lines[-1], out.stdout
    assert "reviews-v2" in meshlib_lines[-1], out.stdout  # 50/50 after the edit


def test_control_plane_refuses_a_port_held_by_a_plain_socket():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = meshctl("control-plane", "--config", "examples/mesh", "--insecure",
                         "--xds-address", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"meshctl: cannot serve xDS on 127.0.0.1:{port}: address already in use "
        "(another control plane?)")


def test_a_second_control_plane_on_the_same_port_refuses(tmp_path, backends,
                                                        control_plane_factory):
    """gRPC's default SO_REUSEPORT would let it "serve" beside the first one."""
    config = tmp_path / "mesh"
    write_mesh(config, {"reviews-v1": [backends("reviews-v1-a")]})
    first = control_plane_factory(config)
    result = meshctl("control-plane", "--config", str(config), "--insecure",
                     "--xds-address", first.xds_address)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"meshctl: cannot serve xDS on {first.xds_address}: address already in use "
        "(another control plane?)")
    assert first.proc.poll() is None and first.admin("/readyz")[0] == 200


def test_control_plane_refuses_a_busy_admin_port(tmp_path, backends, control_plane_factory):
    config = tmp_path / "mesh"
    write_mesh(config, {"reviews-v1": [backends("reviews-v1-a")]})
    first = control_plane_factory(config)
    result = meshctl("control-plane", "--config", str(config), "--insecure",
                     "--xds-address", f"127.0.0.1:{free_port()}",
                     "--admin-address", f":{first.admin_port}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"meshctl: cannot serve admin on 127.0.0.1:{first.admin_port}: address already in "
        "use (another control plane?)")
