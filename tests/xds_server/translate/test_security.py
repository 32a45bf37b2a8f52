"""Table tests of mTLS translation: identities, modes, Cluster and server-Listener TLS
contexts per node group, merged listeners, and the bootstrap that enables them."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from tests.xds_server.translate.model_builders import (
    access_policy,
    access_rule,
    backend,
    endpoint,
    endpoint_slice,
    grpc_route,
    mesh,
    port,
    rule,
    service,
)
from tests.xds_server.translate.reference_check import hcm_of
from xds_server.bootstrap import BootstrapOptions, make_bootstrap
from xds_server.model import SERVICE_ACCOUNTS_ANNOTATION, MeshConfig, Service
from xds_server.node import NodeGroup, group_of
from xds_server.resources import CLUSTER, LISTENER
from xds_server.sources.yaml_loader import check, load_model
from xds_server.translate import build_resources
from xds_server.translate.security import (
    CERT_PROVIDER_INSTANCE,
    effective_mtls_mode,
    service_identities,
    strictest_mode,
)

SERVER = "grpc/server?xds.resource.listening_address="
CLUSTER_NAME = "outbound|50051||reviews.default.svc.cluster.local"
UPSTREAM_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_URL = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext")

GRPC = NodeGroup(kind="grpc")
GRPC_TLS = NodeGroup(kind="grpc", tls=True)
MESHLIB = NodeGroup(kind="meshlib", tls=True)  # as group_of makes every meshlib node
ENVOY = NodeGroup(kind="envoy")


def annotated(name: str = "reviews", accounts: str = "", account: str = "",
              namespace: str = "default") -> Service:
    base = service(name, namespace=namespace)
    notes = ((SERVICE_ACCOUNTS_ANNOTATION, accounts),) if accounts else ()
    return Service(name=name, namespace=namespace, ports=base.ports, service_account=account,
                   annotations=notes)


def reviews_model(mode: str | None = None, *extra: object, svc: Service | None = None,
                  mesh_config: MeshConfig | None = None):
    svc = svc or service("reviews")
    objects = [svc, endpoint_slice(svc, endpoint("10.0.0.1")), *extra]
    if mode is not None:
        objects.append(access_policy(svc.name, mode=mode))
    return mesh(*objects, mesh_config=mesh_config)


def upstream(cluster) -> tls_pb2.UpstreamTlsContext:
    assert cluster.transport_socket.name == "envoy.transport_sockets.tls"
    assert cluster.transport_socket.typed_config.type_url == UPSTREAM_URL
    context = tls_pb2.UpstreamTlsContext()
    assert cluster.transport_socket.typed_config.Unpack(context)
    return context


def downstream(listener) -> tls_pb2.DownstreamTlsContext | None:
    (chain,) = listener.filter_chains
    if not chain.HasField("transport_socket"):
        return None
    assert chain.transport_socket.name == "envoy.transport_sockets.tls"
    assert chain.transport_socket.typed_config.type_url == DOWNSTREAM_URL
    context = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(context)
    return context


def sans(cluster) -> list[str]:
    validation = upstream(cluster).common_tls_context.validation_context
    return [m.exact for m in validation.match_subject_alt_names]


# --------------------------------------------------------------------- node groups


@pytest.mark.parametrize(("metadata", "user_agent", "tls", "key"), [
    pytest.param({}, "", False, "grpc/default", id="grpc-plain"),
    pytest.param({"MESHLIB_TLS": "true"}, "", True, "grpc/default/tls", id="grpc-string-true"),
    pytest.param({"MESHLIB_TLS": "TRUE"}, "", True, "grpc/default/tls", id="grpc-upper-true"),
    pytest.param({"MESHLIB_TLS": True}, "", True, "grpc/default/tls", id="grpc-bool-true"),
    pytest.param({"MESHLIB_TLS": "false"}, "", False, "grpc/default", id="grpc-false"),
    pytest.param({"MESHLIB_TLS": False}, "", False, "grpc/default", id="grpc-bool-false"),
    pytest.param({"MESHLIB_KIND": "meshlib"}, "", True, "meshlib/default",
                 id="meshlib-always"),
    pytest.param({"MESHLIB_KIND": "meshlib", "MESHLIB_TLS": "false"}, "", True,
                 "meshlib/default", id="meshlib-regardless"),
    pytest.param({"MESHLIB_TLS": "true", "OUTBOUND_PORT": "15001"}, "envoy", False,
                 "envoy/default/15001", id="envoy-never-yet"),
])
def test_group_tls_flag(metadata, user_agent, tls, key):
    node = base_pb2.Node(id="n", user_agent_name=user_agent)
    node.metadata.update(metadata)
    group = group_of(node)
    assert (group.tls, group.key) == (tls, key)


def test_group_keys_tell_tls_apart():
    groups = [NodeGroup(kind=k, tls=t) for k in ("grpc", "meshlib", "envoy") for t in (False, True)]
    assert [g.key for g in groups] == [
        "grpc/default", "grpc/default/tls", "meshlib/default/plaintext", "meshlib/default",
        "envoy/default", "envoy/default/tls"]


@pytest.mark.parametrize("cert_dir", ["", "/var/run/meshlib/certs"])
def test_bootstrap_cert_dir_declares_the_provider_and_the_tls_group(cert_dir):
    bootstrap = make_bootstrap(BootstrapOptions(xds_address="127.0.0.1:15010", node_id="a",
                                                cert_dir=cert_dir))
    node = json_format.ParseDict(bootstrap["node"], base_pb2.Node())
    assert group_of(node).tls == bool(cert_dir)
    if not cert_dir:
        assert "certificate_providers" not in bootstrap
        return
    assert bootstrap["certificate_providers"] == {CERT_PROVIDER_INSTANCE: {
        "plugin_name": "file_watcher",
        "config": {"certificate_file": f"{cert_dir}/cert.pem",
                   "private_key_file": f"{cert_dir}/key.pem",
                   "ca_certificate_file": f"{cert_dir}/ca.pem",
                   "refresh_interval": "10s"}}}


# ---------------------------------------------------------------- identities, modes


@pytest.mark.parametrize(("svc", "trust_domain", "expected"), [
    pytest.param(annotated(), "cluster.local", ["spiffe://cluster.local/ns/default/sa/reviews"],
                 id="default-is-the-service-name"),
    pytest.param(annotated(namespace="shop"), "corp.example",
                 ["spiffe://corp.example/ns/shop/sa/reviews"], id="trust-domain-and-namespace"),
    pytest.param(annotated(account="reviews-sa"), "cluster.local",
                 ["spiffe://cluster.local/ns/default/sa/reviews-sa"],
                 id="singular-annotation"),
    pytest.param(annotated(accounts="a, b,,a"), "cluster.local",
                 ["spiffe://cluster.local/ns/default/sa/a",
                  "spiffe://cluster.local/ns/default/sa/b"], id="list-annotation"),
    pytest.param(annotated(accounts="a", account="single"), "cluster.local",
                 ["spiffe://cluster.local/ns/default/sa/a"], id="list-wins-over-singular"),
    pytest.param(annotated(accounts=" , "), "cluster.local",
                 ["spiffe://cluster.local/ns/default/sa/reviews"], id="blank-list-is-default"),
])
def test_service_identities(svc, trust_domain, expected):
    model = mesh(svc, mesh_config=MeshConfig(trust_domain=trust_domain))
    assert [sid.uri for sid in service_identities(model, svc)] == expected


@pytest.mark.parametrize(("policies", "default", "expected"), [
    pytest.param((), "PERMISSIVE", "PERMISSIVE", id="no-policy-mesh-default"),
    pytest.param((), "STRICT", "STRICT", id="no-policy-strict-default"),
    pytest.param(((None, "a"),), "DISABLE", "DISABLE", id="policy-without-mode"),
    pytest.param((("STRICT", "a"),), "DISABLE", "STRICT", id="policy-mode"),
    pytest.param(((None, "a"), ("DISABLE", "b"), ("STRICT", "c")), "PERMISSIVE", "DISABLE",
                 id="first-policy-with-a-mode"),
])
def test_effective_mtls_mode(policies, default, expected):
    svc = service("reviews")
    model = mesh(svc, *(access_policy("reviews", mode=m, name=n) for m, n in policies),
                 mesh_config=MeshConfig(default_mtls_mode=default))
    assert effective_mtls_mode(model, svc) == expected


@pytest.mark.parametrize(("modes", "expected"), [
    ((), "DISABLE"), (("DISABLE", "PERMISSIVE"), "PERMISSIVE"),
    (("PERMISSIVE", "STRICT", "DISABLE"), "STRICT"), (("DISABLE",), "DISABLE"),
])
def test_strictest_mode(modes, expected):
    assert strictest_mode(modes) == expected


# ------------------------------------------------------------------------ clusters


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE", "DISABLE", None])
@pytest.mark.parametrize("group", [GRPC, GRPC_TLS, MESHLIB, ENVOY], ids=lambda g: g.key)
def test_cluster_tls_by_mode_and_group(mode, group):
    cluster = build_resources(reviews_model(mode), group)[CLUSTER][CLUSTER_NAME]
    # None: the mesh default, PERMISSIVE. Plain gRPC nodes have no certificate provider
    # to name (gRPC NACKs the Cluster); Envoy gets no TLS contexts yet.
    wanted = group.tls and mode != "DISABLE"
    assert cluster.HasField("transport_socket") == wanted
    if wanted:
        assert sans(cluster) == ["spiffe://cluster.local/ns/default/sa/reviews"]


def test_upstream_tls_context_shape():
    cluster = build_resources(reviews_model("STRICT"), GRPC_TLS)[CLUSTER][CLUSTER_NAME]
    common = upstream(cluster).common_tls_context
    assert common.tls_certificate_provider_instance.instance_name == "meshlib"
    assert common.tls_certificate_provider_instance.certificate_name == "default"
    assert common.WhichOneof("validation_context_type") == "validation_context"
    validation = common.validation_context
    assert validation.ca_certificate_provider_instance.instance_name == "meshlib"
    assert validation.ca_certificate_provider_instance.certificate_name == "ROOTCA"
    # gRPC 1.85 ignores typed SAN matchers (any server the CA signed would pass).
    assert not validation.match_typed_subject_alt_names
    (matcher,) = validation.match_subject_alt_names
    assert matcher.WhichOneof("match_pattern") == "exact" and not matcher.ignore_case
    assert not common.tls_certificates and not common.HasField("tls_params")


def test_cluster_sans_follow_the_annotation_on_every_port():
    base = annotated(accounts="reviews-v1,reviews-v2")
    svc = Service(name="reviews", namespace="default",
                  ports=(port(50051), port(8080, "http", "http")), annotations=base.annotations)
    out = build_resources(reviews_model("STRICT", svc=svc), GRPC_TLS)[CLUSTER]
    for name in (CLUSTER_NAME, "outbound|8080||reviews.default.svc.cluster.local"):
        assert sans(out[name]) == ["spiffe://cluster.local/ns/default/sa/reviews-v1",
                                   "spiffe://cluster.local/ns/default/sa/reviews-v2"]


def test_cluster_tls_is_the_destinations_not_the_routes():
    """A route's Cluster names are the backends'; each backend's mode rules its Cluster."""
    front, v1, v2 = service("reviews"), service("reviews-v1"), service("reviews-v2")
    model = mesh(front, v1, v2, grpc_route("reviews", rule(backend("reviews-v1"),
                                                            backend("reviews-v2"))),
                 access_policy("reviews", mode="STRICT"),
                 access_policy("reviews-v2", mode="DISABLE"))
    out = build_resources(model, GRPC_TLS)[CLUSTER]
    has_tls = {name.split("||")[1].split(".")[0]: c.HasField("transport_socket")
               for name, c in out.items()}
    assert has_tls == {"reviews": True, "reviews-v1": True, "reviews-v2": False}


def test_service_accounts_annotation_from_yaml(tmp_path):
    (tmp_path / "svc.yaml").write_text("""apiVersion: v1
kind: Service
metadata:
  name: reviews
  annotations:
    meshlib.dev/service-accounts: "reviews-v1, reviews-v2"
    kubectl.kubernetes.io/last-applied-configuration: "{}"
spec:
  ports: [{name: grpc, port: 50051, appProtocol: grpc}]
""")
    model = load_model(tmp_path)
    (svc,) = model.services
    assert svc.annotations == ((SERVICE_ACCOUNTS_ANNOTATION, "reviews-v1, reviews-v2"),)
    assert [s.service_account for s in service_identities(model, svc)] == [
        "reviews-v1", "reviews-v2"]
    (tmp_path / "svc.yaml").write_text((tmp_path / "svc.yaml").read_text().replace(
        "reviews-v1, reviews-v2", "reviews-v1,Bad_Name"))
    (problem,) = check(tmp_path)
    assert "meshlib.dev/service-accounts" in str(problem) and "Bad_Name" in str(problem)


# ---------------------------------------------------------------- server listeners


@pytest.mark.parametrize(("mode", "require"), [
    ("STRICT", True), ("PERMISSIVE", False), (None, False), ("DISABLE", None)])
@pytest.mark.parametrize("group", [GRPC, GRPC_TLS, MESHLIB], ids=lambda g: g.key)
def test_server_listener_tls_by_mode_and_group(mode, require, group):
    listeners = build_resources(reviews_model(mode), group)[LISTENER]
    for key in ("10.0.0.1:8080", "0.0.0.0:8080", "[::]:8080"):
        context = downstream(listeners[SERVER + key])
        if require is None or not group.tls:
            assert context is None
            continue
        assert context is not None
        assert context.require_client_certificate.value is require
        assert context.HasField("require_client_certificate")  # gRPC reads the wrapper
        common = context.common_tls_context
        assert common.tls_certificate_provider_instance.instance_name == "meshlib"
        validation = common.validation_context
        assert validation.ca_certificate_provider_instance.certificate_name == "ROOTCA"
        # gRPC NACKs SAN matchers on servers: who may call is RBAC's business.
        assert not validation.match_subject_alt_names
        assert context.ocsp_staple_policy == tls_pb2.DownstreamTlsContext.LENIENT_STAPLING


def test_listeners_shared_by_services_take_the_strictest_mode():
    """reviews (STRICT) and reviews-v1 (DISABLE) share 10.0.0.1:8080; v1 alone has
    10.0.0.2:8080; both use port 8080, so the any-address listeners are shared too."""
    reviews, v1 = service("reviews"), service("reviews-v1")
    model = mesh(reviews, v1,
                 endpoint_slice(reviews, endpoint("10.0.0.1")),
                 endpoint_slice(v1, endpoint("10.0.0.1"), endpoint("10.0.0.2")),
                 access_policy("reviews", mode="STRICT"),
                 access_policy("reviews-v1", mode="DISABLE"))
    listeners = build_resources(model, GRPC_TLS)[LISTENER]
    mode = {key: downstream(listeners[SERVER + key]) for key in
            ("10.0.0.1:8080", "10.0.0.2:8080", "0.0.0.0:8080", "[::]:8080")}
    assert mode["10.0.0.2:8080"] is None
    for key in ("10.0.0.1:8080", "0.0.0.0:8080", "[::]:8080"):
        assert mode[key] is not None and mode[key].require_client_certificate.value


def test_listeners_shared_by_services_merge_their_rules():
    reviews, v1 = service("reviews"), service("reviews-v1")
    model = mesh(reviews, v1,
                 endpoint_slice(reviews, endpoint("10.0.0.1")),
                 endpoint_slice(v1, endpoint("10.0.0.1"), endpoint("10.0.0.2")),
                 access_policy("reviews", access_rule("DENY", from_namespaces=("evil",))),
                 access_policy("reviews-v1", access_rule("ALLOW", from_namespaces=("good",))))
    listeners = build_resources(model, GRPC)[LISTENER]

    def policies(key: str) -> dict[str, list[str]]:
        out = {}
        for f in hcm_of(listeners[SERVER + key]).http_filters[:-1]:
            config = rbac_pb2.RBAC()
            assert f.typed_config.Unpack(config)
            out[f.name] = sorted(config.rules.policies)
        return out

    merged = {"meshlib.rbac.deny": ["default/reviews/rules[0]"],
              "meshlib.rbac.allow": ["default/reviews-v1/rules[0]"]}
    assert policies("10.0.0.1:8080") == merged
    assert policies("0.0.0.0:8080") == merged
    assert policies("10.0.0.2:8080") == {"meshlib.rbac.allow": ["default/reviews-v1/rules[0]"]}


def test_envoy_gets_no_server_listeners_or_tls():
    out = build_resources(reviews_model("STRICT"), ENVOY)
    assert not any(name.startswith(SERVER) for name in out[LISTENER])
    assert not any(c.HasField("transport_socket") for c in out[CLUSTER].values())
