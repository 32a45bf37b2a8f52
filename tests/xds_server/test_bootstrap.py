"""`make_bootstrap`: one file that every gRPC xDS client accepts; its xDS channel
(plaintext, TLS, mTLS); and `envoy_bootstrap`, Envoy's, with TLS to the control plane.

C-core (grpcio) is the lenient one; Node's ``@grpc/grpc-js-xds`` checks more
(``src/xds-bootstrap.ts``). These pin the fields and types both need; the real
validators run in tests/e2e/test_native_grpc.py and tests/e2e/test_node_xds.py.
"""

from __future__ import annotations

import json

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2  # noqa: F401 (Any types)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from meshlib.contract import CERT_FILE, ENVOY_NODE, KEY_FILE, OUTBOUND_PORT_METADATA_KEY
from xds_server.bootstrap import (
    DEFAULT_XDS_NAME,
    XDS_CERT_SECRET,
    XDS_CLUSTER,
    XDS_ROOTS_SECRET,
    BootstrapOptions,
    EnvoyBootstrapOptions,
    bootstrap_json,
    envoy_bootstrap,
    envoy_secret_files,
    make_bootstrap,
)
from xds_server.node import NodeGroup, group_of

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


# ------------------------------------------------ the xDS channel (gRFC A65 "tls")

def test_without_a_root_the_xds_channel_is_plaintext():
    (server,) = make_bootstrap(BootstrapOptions(**BASE, cert_dir="/certs"))["xds_servers"]
    assert server["channel_creds"] == [{"type": "insecure"}]


def test_a_root_makes_the_xds_channel_tls_verified_against_it():
    (server,) = make_bootstrap(BootstrapOptions(**BASE, ca_root="/etc/mesh/root.pem"))[
        "xds_servers"]
    assert server["channel_creds"] == [{"type": "tls", "config": {
        "ca_certificate_file": "/etc/mesh/root.pem", "refresh_interval": "10s"}}]


def test_a_root_and_a_cert_dir_make_the_xds_channel_mtls_with_the_workload_certificate():
    options = BootstrapOptions(**BASE, ca_root="/etc/mesh/root.pem", cert_dir="/certs",
                               refresh_interval="2s")
    doc = make_bootstrap(options)
    (creds,) = doc["xds_servers"][0]["channel_creds"]
    assert creds == {"type": "tls", "config": {
        "ca_certificate_file": "/etc/mesh/root.pem",
        "certificate_file": f"/certs/{CERT_FILE}", "private_key_file": f"/certs/{KEY_FILE}",
        "refresh_interval": "2s"}}
    # The same files as the data plane's certificate provider, re-read as often.
    provider = doc["certificate_providers"]["meshlib"]["config"]
    assert provider["certificate_file"] == creds["config"]["certificate_file"]
    assert provider["refresh_interval"] == "2s"


# ------------------------------------------------------------------------- Envoy

ENVOY = {"xds_address": "127.0.0.1:15010", "node_id": "web-1"}
MTLS = {**ENVOY, "ca_root": "/etc/mesh/root.pem", "cert_dir": "/var/run/certs",
        "secrets_prefix": "/etc/envoy/envoy"}


def envoy_doc(**options) -> dict:
    return envoy_bootstrap(EnvoyBootstrapOptions(**{**ENVOY, **options}))


def xds_cluster(doc: dict) -> dict:
    (cluster,) = doc["static_resources"]["clusters"]
    assert cluster["name"] == XDS_CLUSTER
    return cluster


def test_envoy_bootstrap_parses_as_envoys_bootstrap_proto():
    # Unknown fields or wrong types fail here; `envoy --mode validate` runs in
    # tests/e2e/test_envoy.py.
    json_format.ParseDict(envoy_doc(**MTLS), bootstrap_pb2.Bootstrap())
    for content in envoy_secret_files(EnvoyBootstrapOptions(**MTLS)).values():
        json_format.ParseDict(content, discovery_pb2.DiscoveryResponse())


def test_envoy_node_is_grouped_as_the_control_plane_expects():
    doc = envoy_doc(namespace="shop", outbound_port=15001, zone="z1")
    node = json_format.ParseDict(doc["node"], base_pb2.Node())
    node.user_agent_name = "envoy"  # Envoy sets it itself
    assert group_of(node) == NodeGroup(kind=ENVOY_NODE, namespace="shop", outbound_port=15001)
    assert doc["node"]["cluster"] == "web-1"  # SDS needs one; default: the node id
    assert envoy_doc(cluster="web")["node"]["cluster"] == "web"
    assert OUTBOUND_PORT_METADATA_KEY not in envoy_doc()["node"]["metadata"]


def test_envoy_ads_over_grpc_to_the_xds_cluster_and_admin_on_loopback():
    doc = envoy_doc(admin_port=9901)
    ads = doc["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == "GRPC" and envoy_doc(delta=True)[
        "dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    assert ads["grpc_services"] == [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}]
    assert doc["admin"]["address"]["socket_address"] == {"address": "127.0.0.1",
                                                         "port_value": 9901}
    cluster = xds_cluster(doc)
    options = cluster["typed_extension_protocol_options"]
    (http,) = options.values()
    assert "http2_protocol_options" in http["explicit_http_config"]
    assert "transport_socket" not in cluster  # no root: plaintext


@pytest.mark.parametrize(("address", "kind", "host", "port"), [
    ("127.0.0.1:15010", "STATIC", "127.0.0.1", 15010),
    ("[::1]:15012", "STATIC", "::1", 15012),
    ("meshlib-control-plane.meshlib-system.svc:15012", "STRICT_DNS",
     "meshlib-control-plane.meshlib-system.svc", 15012),
])
def test_envoy_xds_cluster_address(address, kind, host, port):
    cluster = xds_cluster(envoy_doc(xds_address=address))
    assert cluster["type"] == kind
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {"address": host,
                                                                 "port_value": port}


def tls_context(doc: dict) -> dict:
    socket = xds_cluster(doc)["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    return socket["typed_config"]


def test_envoy_tls_to_the_control_plane_checks_its_name_and_the_pinned_root():
    tls = tls_context(envoy_doc(**MTLS))
    assert tls["sni"] == DEFAULT_XDS_NAME == "meshlib-control-plane.meshlib-system.svc"
    validation = tls["common_tls_context"]["combined_validation_context"]
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": DEFAULT_XDS_NAME}}]
    files = envoy_secret_files(EnvoyBootstrapOptions(**MTLS))
    roots = validation["validation_context_sds_secret_config"]
    (roots_secret,) = files[roots["sds_config"]["path_config_source"]["path"]]["resources"]
    assert roots_secret["name"] == roots["name"] == XDS_ROOTS_SECRET
    assert roots_secret["validation_context"] == {
        "trusted_ca": {"filename": "/etc/mesh/root.pem"},
        "watched_directory": {"path": "/etc/mesh"}}


def test_envoy_mtls_certificate_comes_from_the_cert_dir_watched_for_rotation():
    tls = tls_context(envoy_doc(**MTLS))
    (cert,) = tls["common_tls_context"]["tls_certificate_sds_secret_configs"]
    path = cert["sds_config"]["path_config_source"]["path"]
    assert path == "/etc/envoy/envoy-xds-cert.json"
    (secret,) = envoy_secret_files(EnvoyBootstrapOptions(**MTLS))[path]["resources"]
    assert secret["name"] == cert["name"] == XDS_CERT_SECRET
    assert secret["tls_certificate"] == {
        "certificate_chain": {"filename": f"/var/run/certs/{CERT_FILE}"},
        "private_key": {"filename": f"/var/run/certs/{KEY_FILE}"},
        "watched_directory": {"path": "/var/run/certs"}}


def test_envoy_tls_without_a_cert_dir_shows_no_certificate():
    options = {**MTLS, "cert_dir": ""}
    tls = tls_context(envoy_doc(**options))
    assert "tls_certificate_sds_secret_configs" not in tls["common_tls_context"]
    assert list(envoy_secret_files(EnvoyBootstrapOptions(**options))) == [
        "/etc/envoy/envoy-xds-roots.json"]


def test_envoy_xds_name_as_an_address_is_an_ip_san_and_no_sni():
    tls = tls_context(envoy_doc(**MTLS, xds_name="10.0.0.7"))
    assert "sni" not in tls  # SNI carries host names only (RFC 6066)
    validation = tls["common_tls_context"]["combined_validation_context"]
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "IP_ADDRESS", "matcher": {"exact": "10.0.0.7"}}]


@pytest.mark.parametrize(("options", "message"), [
    pytest.param({"cert_dir": "/c"}, "give the mesh root", id="cert-dir-without-root"),
    pytest.param({"ca_root": "/r.pem"}, "give secrets_prefix", id="root-without-prefix"),
])
def test_envoy_options_that_cannot_work_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        EnvoyBootstrapOptions(**ENVOY, **options)


def test_bootstrap_json_writes_either_kind():
    assert json.loads(bootstrap_json(EnvoyBootstrapOptions(**ENVOY)))["node"]["id"] == "web-1"
    assert "xds_servers" in json.loads(bootstrap_json(BootstrapOptions(**BASE)))
