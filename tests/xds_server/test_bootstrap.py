"""`make_bootstrap`: one file that every gRPC xDS client accepts.

C-core (grpcio) is the lenient one; Node's ``@grpc/grpc-js-xds`` checks more
(``src/xds-bootstrap.ts``). These pin the fields and types both need; the real
validators run in tests/e2e/test_native_grpc.py and tests/e2e/test_node_xds.py.
"""

from __future__ import annotations

import json

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from xds_server.bootstrap import BootstrapOptions, bootstrap_json, make_bootstrap

BASE = {"xds_address": "127.0.0.1:15010", "node_id": "a-1"}


@pytest.mark.parametrize(("zone", "locality"), [
    pytest.param("", {}, id="no-zone-empty-locality"),
    pytest.param("zone-a", {"zone": "zone-a"}, id="zone"),
])
def test_node_always_has_a_locality(zone, locality):
    # grpc-js-xds: "locality field missing in node element" without it.
    node = make_bootstrap(BootstrapOptions(**BASE, zone=zone))["node"]
    assert node["locality"] == locality


@pytest.mark.parametrize("options", [
    pytest.param({}, id="minimal"),
    pytest.param({"zone": "zone-a", "cluster": "reviews", "namespace": "shop"}, id="all-node"),
    pytest.param({"cert_dir": "/var/run/meshlib/certs"}, id="cert-dir"),
])
def test_fields_have_the_types_grpc_js_xds_checks(options):
    doc = json.loads(bootstrap_json(BootstrapOptions(**BASE, **options)))
    (server,) = doc["xds_servers"]
    assert isinstance(server["server_uri"], str)
    # At least one channel credential grpc-js-xds supports (insecure, google_default).
    assert {c["type"] for c in server["channel_creds"]} & {"insecure", "google_default"}
    assert all(isinstance(f, str) for f in server["server_features"])
    node = doc["node"]
    assert isinstance(node["id"], str)
    assert isinstance(node["locality"], dict)
    assert all(isinstance(v, str) for v in node["locality"].values())
    assert isinstance(node.get("cluster", ""), str)
    assert isinstance(node["metadata"], dict)
    assert isinstance(doc["server_listener_resource_name_template"], str)
    for provider in doc.get("certificate_providers", {}).values():
        assert provider["plugin_name"] == "file_watcher"
        assert provider["config"]["refresh_interval"].endswith("s")
    # And the node is a valid envoy Node, as C-core and the control plane read it.
    json_format.ParseDict(node, base_pb2.Node())
