"""Decoders: the real translator's protos decode into the expected dataclasses, and
hand-made invalid protos fail with a ResourceValidationError naming the problem."""

from __future__ import annotations

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2

from meshlib.errors import XdsError
from meshlib.xds import (
    CLUSTER,
    DECODERS,
    ENDPOINT,
    LISTENER,
    ROUTE,
    ClusterWeight,
    HashPolicy,
    LbPolicy,
    ResourceValidationError,
    ServerListenerUpdate,
    decode_cluster,
    decode_endpoints,
    decode_listener,
    decode_route_config,
)
from tests.meshlib.xds.xds_models import FQDN, OWN, RDS, V1, V2, pack

# ------------------------------------------------------------------ from the translator


def test_listener_points_at_its_route_config(canary):
    update = decode_listener(pack(canary[LISTENER]["reviews"]))
    assert update.name == "reviews"
    assert update.route_config_name == RDS and update.route_config is None
    assert update.http_filters == ("envoy.filters.http.fault", "envoy.filters.http.router")


def test_server_listener_decodes_mode_and_authorization(canary):
    name = next(n for n in canary[LISTENER] if n.startswith("grpc/server"))
    update = decode_listener(pack(canary[LISTENER][name]))
    assert isinstance(update, ServerListenerUpdate)
    assert update.name == name
    assert update.mtls_mode == "DISABLE"  # the canary's node group has no TLS
    assert update.authorization is None


def test_listener_without_api_listener_or_address_is_rejected(canary):
    listener = listener_pb2.Listener(name="odd")
    with pytest.raises(ResourceValidationError, match="neither an api_listener") as err:
        decode_listener(pack(listener))
    assert err.value.resource_name == "odd" and err.value.type_url == LISTENER


def test_route_config_canary_and_policies(canary):
    update = decode_route_config(pack(canary[ROUTE][RDS]))
    (vhost,) = update.virtual_hosts
    assert update.name == RDS
    assert {"reviews", "reviews:50051", FQDN, RDS} <= set(vhost.domains)
    header_route, split = vhost.routes
    assert header_route.match.prefix == ""
    (hm,) = header_route.match.headers
    assert (hm.name, hm.string.kind, hm.string.value) == ("x-canary", "exact", "1")
    assert header_route.action.clusters == (ClusterWeight(name=V2, weight=1),)
    action = split.action
    assert action.clusters == (ClusterWeight(name=V1, weight=90), ClusterWeight(name=V2, weight=10))
    assert action.total_weight == 100
    assert action.timeout == 2.5 and action.max_stream_duration == 2.5
    retry = action.retry_policy
    assert retry.retry_on == {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert (retry.num_retries, retry.base_interval, retry.max_interval,
            retry.per_try_timeout) == (3, 0.05, 0.5, 0.2)
    assert action.hash_policies == (HashPolicy(header_name="x-user"),)
    fault = split.fault
    assert (fault.delay, fault.delay_percent) == (0.1, 10.0)
    assert (fault.abort_grpc_status, fault.abort_percent) == (grpc.StatusCode.UNAVAILABLE, 5.5)
    assert split.direct_response_status is None and not split.non_forwarding


def test_default_route_has_no_timeout(canary):
    (vhost,) = decode_route_config(pack(canary[ROUTE][f"{V1.split('||')[1]}:50051"])).virtual_hosts
    (route,) = vhost.routes
    assert route.action.timeout is None and route.action.retry_policy is None
    assert route.fault is None


def test_cluster_ring_hash_limits_and_outlier_detection(canary):
    update = decode_cluster(pack(canary[CLUSTER][OWN]))
    assert update.eds_service_name == OWN
    assert update.lb_policy == LbPolicy(name="RING_HASH", minimum_ring_size=2048,
                                        maximum_ring_size=4096)
    assert update.max_requests == 77
    od = update.outlier_detection
    assert (od.consecutive_5xx, od.interval, od.base_ejection_time, od.max_ejection_percent,
            od.enforcing_success_rate, od.max_ejection_time) == (3, 2.0, 5.0, 40, 0, 300.0)


def test_cluster_least_request_from_load_balancing_policy(canary):
    update = decode_cluster(pack(canary[CLUSTER][V1]))
    assert update.lb_policy == LbPolicy(name="LEAST_REQUEST", choice_count=2)
    assert update.max_requests == 1024 and update.outlier_detection is None


def test_endpoints_with_zones_weights_and_health(canary):
    update = decode_endpoints(pack(canary[ENDPOINT][V1]))
    assert update.cluster_name == V1
    assert [(loc.zone, loc.weight) for loc in update.localities] == [("a", 1), ("b", 2)]
    got = [(e.address, e.port, e.health, e.zone, e.locality_weight, e.healthy)
           for e in update.endpoints]
    assert got == [("10.0.0.1", 8080, "HEALTHY", "a", 1, True),
                   ("10.0.0.2", 8080, "HEALTHY", "b", 2, True),
                   ("10.0.0.4", 8080, "UNHEALTHY", "b", 2, False)]


def test_every_translated_meshlib_resource_decodes(canary):
    for type_url, by_name in canary.items():
        for name, proto in by_name.items():
            if type_url == LISTENER and name.startswith("grpc/server"):
                continue
            DECODERS[type_url](pack(proto))


# ------------------------------------------------------------------ invalid, hand-made


def _hcm_listener(hcm: hcm_pb2.HttpConnectionManager, name: str = "l") -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=pack(hcm)))


def _route_config(*routes: rc_pb2.Route) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name="rc", virtual_hosts=[rc_pb2.VirtualHost(name="v", domains=["*"], routes=routes)])


def _forward(**action: object) -> rc_pb2.Route:
    return rc_pb2.Route(match=rc_pb2.RouteMatch(prefix=""), route=rc_pb2.RouteAction(**action))


def _cluster(**fields: object) -> cluster_pb2.Cluster:
    out = cluster_pb2.Cluster(name="c", type=cluster_pb2.Cluster.EDS, **fields)
    out.eds_cluster_config.eds_config.ads.SetInParent()
    return out


def _ring(minimum: int, maximum: int) -> cluster_pb2.Cluster:
    out = _cluster(lb_policy=cluster_pb2.Cluster.RING_HASH)
    out.ring_hash_lb_config.minimum_ring_size.value = minimum
    out.ring_hash_lb_config.maximum_ring_size.value = maximum
    return out


def _lb_policies(*configs: object) -> cluster_pb2.Cluster:
    out = _cluster()
    for config in configs:
        policy = out.load_balancing_policy.policies.add()
        policy.typed_extension_config.typed_config.CopyFrom(pack(config))
    return out


def _cla(*groups: ec_pb2.LocalityLbEndpoints) -> endpoint_pb2.ClusterLoadAssignment:
    return endpoint_pb2.ClusterLoadAssignment(cluster_name="c", endpoints=groups)


def _group(address: str = "10.0.0.1", port: int = 80, priority: int = 0
           ) -> ec_pb2.LocalityLbEndpoints:
    group = ec_pb2.LocalityLbEndpoints(priority=priority)
    group.load_balancing_weight.value = 1
    lb = group.lb_endpoints.add()
    lb.endpoint.address.socket_address.address = address
    lb.endpoint.address.socket_address.port_value = port
    return group


_EMPTY_ROUTER_HCM = hcm_pb2.HttpConnectionManager(
    rds=hcm_pb2.Rds(route_config_name="r"), http_filters=[])

INVALID = [
    (LISTENER, decode_listener, listener_pb2.Listener(), "Listener has no name"),
    (LISTENER, decode_listener, _hcm_listener(_EMPTY_ROUTER_HCM),
     "last filter must be the router"),
    (LISTENER, decode_listener, listener_pb2.Listener(
        name="l", api_listener=api_listener_pb2.ApiListener(api_listener=pack(_cluster()))),
     "api_listener: expected envoy.extensions.filters.network.http_connection_manager"),
    (ROUTE, decode_route_config, _route_config(rc_pb2.Route(route=rc_pb2.RouteAction(
        cluster="x"))), r"routes\[0\].match: unsupported path specifier unset"),
    (ROUTE, decode_route_config, _route_config(rc_pb2.Route(
        match=rc_pb2.RouteMatch(safe_regex={"regex": "a(b"}), route={"cluster": "x"})),
     "invalid regex 'a\\(b'"),
    (ROUTE, decode_route_config, _route_config(rc_pb2.Route(
        match=rc_pb2.RouteMatch(safe_regex={"regex": r"/(a)\1"}), route={"cluster": "x"})),
     r"routes\[0\].match.safe_regex: invalid regex .*invalid escape sequence.*RE2 syntax"),
    (ROUTE, decode_route_config, _route_config(rc_pb2.Route(match=rc_pb2.RouteMatch(
        prefix="/", headers=[{"name": "x-user", "safe_regex_match": {"regex": "(?=admin)"}}]),
        route={"cluster": "x"})), r"headers\[0\].safe_regex_match: invalid regex '\(\?=admin\)'"),
    (ROUTE, decode_route_config, _route_config(rc_pb2.Route(match=rc_pb2.RouteMatch(
        prefix="/", headers=[{"name": "x-user", "string_match": {
            "safe_regex": {"regex": "a++"}}}]), route={"cluster": "x"})),
     r"headers\[0\].string_match: invalid regex 'a\+\+'"),
    (ROUTE, decode_route_config, _route_config(_forward(weighted_clusters={
        "clusters": [{"name": "a", "weight": {"value": 0}}]})), "total weight 0"),
    (ROUTE, decode_route_config, _route_config(_forward(
        cluster="x", retry_policy={"retry_on": "unavailable", "retry_back_off": {
            "base_interval": {"nanos": 50_000_000}, "max_interval": {"nanos": 1_000_000}}})),
     "max_interval 0.001s < base_interval 0.05s"),
    (CLUSTER, decode_cluster, cluster_pb2.Cluster(name="c", type=cluster_pb2.Cluster.STATIC),
     "cluster type STATIC is not supported"),
    (CLUSTER, decode_cluster, _ring(4096, 1024), "minimum_ring_size \\(4096\\) <= maximum"),
    (CLUSTER, decode_cluster, _cluster(lb_policy=cluster_pb2.Cluster.MAGLEV),
     "lb_policy MAGLEV is not supported"),
    (CLUSTER, decode_cluster, _lb_policies(ring_hash_pb2.RingHash(
        hash_function=ring_hash_pb2.RingHash.MURMUR_HASH_2)), "only XX_HASH"),
    (CLUSTER, decode_cluster, _cluster(outlier_detection={"max_ejection_percent": {
        "value": 150}}), "max_ejection_percent: 150 > 100"),
    (ENDPOINT, decode_endpoints, _cla(_group(port=0)), "port 0 out of range"),
    (ENDPOINT, decode_endpoints, _cla(_group(address="")), "needs an address and a port_value"),
    (ENDPOINT, decode_endpoints, _cla(_group(), _group(priority=2)), "not contiguous"),
]


@pytest.mark.parametrize(("type_url", "decode", "proto", "message"), INVALID)
def test_invalid_resources_fail_clearly(type_url, decode, proto, message):
    with pytest.raises(ResourceValidationError, match=message) as err:
        decode(pack(proto))
    assert isinstance(err.value, XdsError)
    assert err.value.type_url == type_url


def test_error_names_type_and_resource():
    with pytest.raises(ResourceValidationError) as err:
        decode_cluster(pack(_ring(4096, 1024)))
    assert str(err.value).startswith("CDS resource 'c': ring hash:")
    assert err.value.resource_name == "c"


def test_wrong_message_type_in_any():
    expected = r"expected envoy\.config\.cluster\.v3\.Cluster"
    with pytest.raises(ResourceValidationError, match=expected):
        decode_cluster(pack(_cla()))


def test_zero_weight_locality_is_dropped():
    dropped = _group(address="10.0.0.2")
    dropped.ClearField("load_balancing_weight")
    update = decode_endpoints(pack(_cla(_group(), dropped)))
    assert [e.address for e in update.endpoints] == ["10.0.0.1"]


def test_cluster_header_routes_are_skipped_and_redirects_kept():
    config = _route_config(
        _forward(cluster_header="x-cluster"),
        rc_pb2.Route(match=rc_pb2.RouteMatch(path="/a"), redirect={"host_redirect": "h"}),
        rc_pb2.Route(match=rc_pb2.RouteMatch(prefix="/"), non_forwarding_action={}),
    )
    (vhost,) = decode_route_config(pack(config)).virtual_hosts
    redirect, local = vhost.routes
    assert redirect.match.path == "/a" and redirect.action is None
    assert not redirect.non_forwarding and redirect.direct_response_status is None
    assert local.non_forwarding


def test_inline_route_config_in_listener():
    hcm = hcm_pb2.HttpConnectionManager(route_config=_route_config(_forward(cluster="x")))
    hcm.http_filters.add(name="router").typed_config.Pack(router_pb2.Router())
    update = decode_listener(pack(_hcm_listener(hcm)))
    assert update.route_config_name is None
    assert update.route_config.virtual_hosts[0].routes[0].action.clusters[0].name == "x"


def _tls_cluster(*sans: str) -> cluster_pb2.Cluster:
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
    from envoy.type.matcher.v3 import string_pb2

    context = tls_pb2.UpstreamTlsContext()
    validation = context.common_tls_context.combined_validation_context
    validation.default_validation_context.match_subject_alt_names.extend(
        string_pb2.StringMatcher(exact=san) for san in sans)
    out = _cluster()
    out.transport_socket.name = "envoy.transport_sockets.tls"
    out.transport_socket.typed_config.CopyFrom(pack(context))
    return out


def test_an_upstream_tls_context_without_san_matchers_is_refused():
    """No SAN to check would mean any certificate of the trust domain passes (or, with no
    certificate yet, plaintext): NACKed, never a silent downgrade."""
    spiffe = "spiffe://cluster.local/ns/default/sa/reviews"
    assert decode_cluster(pack(_tls_cluster(spiffe))).tls.identities[0].uri == spiffe
    with pytest.raises(ResourceValidationError, match="no exact SAN matcher"):
        decode_cluster(pack(_tls_cluster()))

def test_server_listener_with_an_rbac_regex_re2_refuses_is_rejected(canary):
    name = next(n for n in canary[LISTENER] if n.startswith("grpc/server"))
    listener = listener_pb2.Listener()
    listener.CopyFrom(canary[LISTENER][name])
    hcm_filter = next(f for f in listener.filter_chains[0].filters
                      if f.typed_config.type_url.endswith("HttpConnectionManager"))
    hcm = hcm_pb2.HttpConnectionManager()
    hcm_filter.typed_config.Unpack(hcm)
    regex = rbac_config_pb2.Permission(url_path=path_pb2.PathMatcher(path=string_pb2.StringMatcher(
        safe_regex=regex_pb2.RegexMatcher(regex="/api/(?=admin).*"))))
    rules = rbac_config_pb2.RBAC(action=rbac_config_pb2.RBAC.DENY, policies={"p": (
        rbac_config_pb2.Policy(principals=[rbac_config_pb2.Principal(any=True)],
                               permissions=[regex]))})
    hcm.http_filters.insert(0, hcm_pb2.HttpFilter(
        name="meshlib.rbac.deny", typed_config=pack(rbac_pb2.RBAC(rules=rules))))
    hcm_filter.typed_config.Pack(hcm)
    with pytest.raises(ResourceValidationError, match=r"RBAC: .*bad regex .*\(\?=admin\)"):
        decode_listener(pack(listener))
