"""Translation is pure and deterministic, and its output is self-consistent.

Same model → byte-identical resources; no state leaks between calls or groups; every
RDS/CDS/EDS name a resource points at exists; every packed ``Any`` is a known message.
"""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2, symbol_database
from google.protobuf.message import Message

from tests.xds_server.translate.model_builders import (
    backend,
    endpoint,
    endpoint_slice,
    grpc_route,
    header,
    http_route,
    match,
    mesh,
    policy,
    port,
    rule,
    service,
)
from tests.xds_server.translate.reference_check import hcms_of, missing_references
from xds_server.model import (
    CircuitBreaker,
    EndpointPort,
    FaultInjection,
    LoadBalancer,
    MeshConfig,
    OutlierDetection,
    RetryPolicy,
)
from xds_server.node import NodeGroup
from xds_server.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_server.translate import build_resources

Resources = dict[str, dict[str, Message]]


def rich_model(cluster_domain: str = "cluster.local"):
    """A model touching every translated feature, built afresh on every call."""
    reviews = service("reviews", port(50051), port(8080, "http", "http"))
    v1, v2 = service("reviews-v1"), service("reviews-v2")
    ratings = service("ratings", port(9090), port(9091, "h2", "http2"), namespace="shop")
    return mesh(
        reviews, v1, v2, ratings, service("lonely", port(7000, "tcp", "tcp")),
        endpoint_slice(v1, endpoint("10.0.0.1", zone="b"), endpoint("10.0.0.2", zone="a"),
                       endpoint("fd00::1", zone="a", ready=False, terminating=True)),
        endpoint_slice(v2, endpoint("10.0.0.3", "fd00::3", ready=False, serving=False)),
        endpoint_slice(ratings, endpoint("10.0.1.1"),
                       ports=(EndpointPort(name="grpc", port=7070),
                              EndpointPort(name="h2", port=7071))),
        grpc_route("reviews",
                   rule(backend("reviews-v2", port=50051),
                        matches=(match(("Exact", "/pkg.Svc/Get"), header("x-canary", "1")),
                                 match(("RegularExpression", "/[^/]+/List")))),
                   rule(backend("reviews-v1", 90, port=50051), backend("reviews-v2", 10,
                                                                       port=50051),
                        backend("ratings", 5, port=9090, namespace="shop"), timeout=1.5),
                   rule(backend("missing", port=50051), matches=(match(("PathPrefix", "/x/")),)),
                   parent_port=50051),
        http_route("reviews",
                   rule(backend("reviews-v1", port=50051),
                        matches=(match(("PathPrefix", "/api"), method="GET",
                                       query=(header("v", "2"),)),),
                        backend_request_timeout=0.5),
                   name="reviews-http", parent_port=8080),
        policy("reviews", timeout=3.0, load_balancer=LoadBalancer(type="RING_HASH",
                                                                   hash_header="x-user"),
               retries=RetryPolicy(attempts=4, per_try_timeout=0.2),
               fault_injection=FaultInjection(delay_percent=0.5, delay=0.1, abort_percent=1)),
        policy("reviews-v1", lb="LEAST_REQUEST", circuit_breaker=CircuitBreaker(),
               outlier_detection=OutlierDetection(failure_percentage_threshold=30)),
        policy("ratings", namespace="shop", outlier_detection=OutlierDetection()),
        mesh_config=MeshConfig(cluster_domain=cluster_domain, sidecar_outbound_port=15002),
    )


GROUPS = [
    NodeGroup(kind="grpc"),
    NodeGroup(kind="grpc", namespace="shop"),
    NodeGroup(kind="meshlib", namespace="other"),
    NodeGroup(kind="envoy"),
    NodeGroup(kind="envoy", namespace="shop", outbound_port=15999),
]
by_key = pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.key)


def serialized(resources: Resources) -> list[tuple[str, list[tuple[str, bytes]]]]:
    """Everything, in output order, as deterministic bytes."""
    return [(type_url, [(name, msg.SerializeToString(deterministic=True))
                        for name, msg in by_name.items()])
            for type_url, by_name in resources.items()]


# ---------------------------------------------------------------------------- determinism


@by_key
def test_same_model_twice_gives_identical_bytes(group):
    model = rich_model()
    assert serialized(build_resources(model, group)) == serialized(build_resources(model, group))


@by_key
def test_equal_models_give_identical_bytes(group):
    assert rich_model() == rich_model()
    assert serialized(build_resources(rich_model(), group)) == serialized(
        build_resources(rich_model(), group))


def test_no_state_leaks_between_groups_or_calls():
    model = rich_model()
    alone = {g.key: serialized(build_resources(rich_model(), g)) for g in GROUPS}
    for g in GROUPS + GROUPS[::-1]:
        assert serialized(build_resources(model, g)) == alone[g.key]


@by_key
def test_mutating_the_output_does_not_change_the_next_build(group):
    model = rich_model()
    before = serialized(build_resources(model, group))
    first = build_resources(model, group)
    for by_name in first.values():
        for msg in by_name.values():
            msg.Clear()
        by_name.clear()
    assert serialized(build_resources(model, group)) == before
    assert model == rich_model()


# -------------------------------------------------------------------------- consistency


@by_key
@pytest.mark.parametrize("domain", ["cluster.local", "corp.example"])
def test_every_referenced_name_exists(group, domain):
    out = build_resources(rich_model(domain), group)
    assert list(out) == [CLUSTER, ENDPOINT, LISTENER, ROUTE]
    assert missing_references(out) == {}


@by_key
def test_resources_are_keyed_by_their_own_names(group):
    out = build_resources(rich_model(), group)
    for type_url, by_name in out.items():
        for name, msg in by_name.items():
            own = msg.cluster_name if type_url == ENDPOINT else msg.name
            assert own == name, type_url


@by_key
def test_every_cluster_has_its_endpoints_and_every_route_config_is_used(group):
    out = build_resources(rich_model(), group)
    assert set(out[CLUSTER]) == set(out[ENDPOINT])
    for name, cluster in out[CLUSTER].items():
        assert cluster.eds_cluster_config.service_name == name
    rds = {hcm.rds.route_config_name for lst in out[LISTENER].values()
           for hcm in hcms_of(lst) if hcm.HasField("rds")}
    assert rds == set(out[ROUTE])


def _anys(msg: Message):
    """Every ``Any`` inside ``msg``, recursively (through packed ones too)."""
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = [v for v in value.values() if isinstance(v, Message)]
        elif field.is_repeated:
            values = list(value)
        else:
            values = [value]
        for item in values:
            if isinstance(item, any_pb2.Any):
                yield item
                inner = symbol_database.Default().GetSymbol(item.TypeName())()
                assert item.Unpack(inner), item.type_url
                yield from _anys(inner)
            else:
                yield from _anys(item)


@by_key
def test_every_packed_any_is_a_known_message(group):
    out = build_resources(rich_model(), group)
    urls = {a.type_url for by_name in out.values() for msg in by_name.values()
            for a in _anys(msg)}
    assert all(url.startswith("type.googleapis.com/envoy.") for url in urls), urls
    assert "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" in urls


@pytest.mark.parametrize(("group", "counts"), [
    (NodeGroup(kind="grpc"), {CLUSTER: 0, ENDPOINT: 0, LISTENER: 0, ROUTE: 0}),
    (NodeGroup(kind="meshlib"), {CLUSTER: 0, ENDPOINT: 0, LISTENER: 0, ROUTE: 0}),
    (NodeGroup(kind="envoy"), {CLUSTER: 0, ENDPOINT: 0, LISTENER: 1, ROUTE: 1}),
], ids=lambda v: v.key if isinstance(v, NodeGroup) else "")
def test_empty_model(group, counts):
    out = build_resources(mesh(), group)
    assert {t: len(by_name) for t, by_name in out.items()} == counts
    assert missing_references(out) == {}
    if group.kind == "envoy":
        assert list(out[ROUTE]["outbound"].virtual_hosts) == []
