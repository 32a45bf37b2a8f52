"""The sans-IO ADS client: requests, ACK/NACK, gRFC A46, removals, reconnects. No sockets."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import code_pb2, status_pb2

from meshlib.xds import (
    CLUSTER,
    LISTENER,
    ROUTE,
    AdsClientProtocol,
    ClusterUpdate,
    ResourceChanged,
    ResourceError,
    ResourceRemoved,
)
from tests.meshlib.xds.xds_models import OWN, RDS, V1, V2, pack

NODE = base_pb2.Node(id="frontend-1")


def _response(type_url: str, version: str, nonce: str, *resources: object,
              not_found: tuple[str, ...] = ()) -> discovery_pb2.DiscoveryResponse:
    out = discovery_pb2.DiscoveryResponse(type_url=type_url, version_info=version, nonce=nonce,
                                          resources=[pack(r) for r in resources])
    for name in not_found:
        out.resource_errors.add(resource_name=discovery_pb2.ResourceName(name=name),
                                error_detail=status_pb2.Status(code=code_pb2.NOT_FOUND))
    return out


def _bad_cluster(name: str) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC)


def _cds(canary, ads=None):  # type: ignore[no-untyped-def]
    ads = ads or AdsClientProtocol(NODE)
    ads.subscribe(CLUSTER, [V1, V2])
    ads.outgoing()
    return ads


def test_first_request_carries_node_and_later_ones_do_not():
    ads = AdsClientProtocol(NODE)
    ads.subscribe(LISTENER, ["reviews"])
    ads.subscribe(ROUTE, [RDS])
    first, second = ads.outgoing()
    assert first.node.id == "frontend-1" and not second.HasField("node")
    assert (first.type_url, list(first.resource_names), first.version_info,
            first.response_nonce) == (LISTENER, ["reviews"], "", "")
    assert ads.outgoing() == []  # nothing more due


def test_ack_carries_version_and_nonce(canary):
    ads = _cds(canary)
    events = ads.receive(_response(CLUSTER, "v1", "n1", canary[CLUSTER][V1], canary[CLUSTER][V2]))
    assert [type(e) for e in events] == [ResourceChanged, ResourceChanged]
    assert isinstance(events[0].update, ClusterUpdate) and events[0].version == "v1"
    (ack,) = ads.outgoing()
    assert (ack.version_info, ack.response_nonce, ack.HasField("error_detail")) == (
        "v1", "n1", False)
    assert ads.version(CLUSTER) == "v1"
    # the same values again: ACKed, but no change events
    assert ads.receive(_response(CLUSTER, "v2", "n2", canary[CLUSTER][V1],
                                 canary[CLUSTER][V2])) == []
    assert ads.outgoing()[0].version_info == "v2"


def test_invalid_resource_keeps_previous_value_and_nack_names_it(canary):
    ads = _cds(canary)
    ads.receive(_response(CLUSTER, "v1", "n1", canary[CLUSTER][V1], canary[CLUSTER][V2]))
    ads.outgoing()
    good_v1 = ads.resources(CLUSTER)[V1]
    changed_v2 = cluster_pb2.Cluster()
    changed_v2.CopyFrom(canary[CLUSTER][V2])
    changed_v2.circuit_breakers.thresholds.add().max_requests.value = 5
    events = ads.receive(_response(CLUSTER, "v2", "n2", _bad_cluster(V1), changed_v2))
    # gRFC A46: the valid resource is applied, the invalid one reported and kept
    changed = [e for e in events if isinstance(e, ResourceChanged)]
    (error,) = [e for e in events if isinstance(e, ResourceError)]
    assert [e.name for e in changed] == [V2] and ads.resources(CLUSTER)[V2].max_requests == 5
    assert error.name == V1 and error.has_previous and "STATIC" in str(error.error)
    assert ads.resources(CLUSTER)[V1] == good_v1
    assert not any(isinstance(e, ResourceRemoved) for e in events)
    (nack,) = ads.outgoing()
    assert nack.version_info == "v1" and nack.response_nonce == "n2"  # LAST GOOD version
    assert nack.error_detail.code == code_pb2.INVALID_ARGUMENT
    assert V1 in nack.error_detail.message and "cluster type STATIC" in nack.error_detail.message
    assert V2 not in nack.error_detail.message
    # the next good response is ACKed normally
    ads.receive(_response(CLUSTER, "v3", "n3", canary[CLUSTER][V1], changed_v2))
    (ack,) = ads.outgoing()
    assert (ack.version_info, ack.HasField("error_detail")) == ("v3", False)


def test_invalid_resource_never_seen_reports_no_previous(canary):
    ads = _cds(canary)
    (event,) = ads.receive(_response(CLUSTER, "v1", "n1", _bad_cluster(V1)))
    assert isinstance(event, ResourceError) and not event.has_previous
    assert V1 not in ads.resources(CLUSTER)


def test_subscription_change_is_a_request_with_version_and_nonce(canary):
    ads = _cds(canary)
    ads.receive(_response(CLUSTER, "v1", "n1", canary[CLUSTER][V1], canary[CLUSTER][V2]))
    ads.subscribe(CLUSTER, [OWN])  # before the ACK went out: one request does both
    (request,) = ads.outgoing()
    assert list(request.resource_names) == sorted([OWN, V1, V2])
    assert (request.version_info, request.response_nonce) == ("v1", "n1")
    ads.unsubscribe(CLUSTER, [V1])
    (request,) = ads.outgoing()
    assert list(request.resource_names) == sorted([OWN, V2])
    assert V1 not in ads.resources(CLUSTER)
    ads.subscribe(CLUSTER, [V2])  # already subscribed: nothing due
    assert ads.outgoing() == []


def test_unsubscribing_everything_sends_an_empty_list(canary):
    ads = _cds(canary)
    ads.unsubscribe(CLUSTER, [V1, V2])
    (request,) = ads.outgoing()
    assert request.type_url == CLUSTER and list(request.resource_names) == []


def test_lds_absent_name_is_removed_rds_absent_is_not(canary):
    ads = AdsClientProtocol(NODE)
    ads.subscribe(LISTENER, ["reviews", "reviews:50051"])
    ads.subscribe(ROUTE, [RDS, "other:1"])
    ads.outgoing()
    lds = canary[LISTENER]
    ads.receive(_response(LISTENER, "v1", "n1", lds["reviews"], lds["reviews:50051"]))
    ads.receive(_response(ROUTE, "v1", "r1", canary[ROUTE][RDS]))
    events = ads.receive(_response(LISTENER, "v2", "n2", lds["reviews"]))
    assert events == [ResourceRemoved(LISTENER, "reviews:50051")]
    assert set(ads.resources(LISTENER)) == {"reviews"}
    assert ads.receive(_response(ROUTE, "v2", "r2")) == []  # RDS omission means nothing
    assert set(ads.resources(ROUTE)) == {RDS}


def test_not_found_resource_error_is_removed_once(canary):
    ads = AdsClientProtocol(NODE)
    ads.subscribe(LISTENER, ["reviews", "nope"])
    ads.outgoing()
    response = _response(LISTENER, "v1", "n1", canary[LISTENER]["reviews"], not_found=("nope",))
    events = ads.receive(response)
    assert ResourceRemoved(LISTENER, "nope") in events
    assert ads.receive(_response(LISTENER, "v1", "n2", canary[LISTENER]["reviews"],
                                 not_found=("nope",))) == []


def test_unparseable_resource_is_nacked_without_inferring_removals(canary):
    ads = _cds(canary)
    ads.receive(_response(CLUSTER, "v1", "n1", canary[CLUSTER][V1], canary[CLUSTER][V2]))
    ads.outgoing()
    garbage = discovery_pb2.DiscoveryResponse(type_url=CLUSTER, version_info="v2", nonce="n2")
    garbage.resources.add(type_url=CLUSTER, value=b"\xff\xff")
    assert ads.receive(garbage) == []  # cannot name it: no event, no removal
    assert set(ads.resources(CLUSTER)) == {V1, V2}
    (nack,) = ads.outgoing()
    assert nack.version_info == "v1" and "cannot parse" in nack.error_detail.message


def test_reset_resubscribes_with_last_accepted_versions(canary):
    ads = AdsClientProtocol(NODE)
    ads.subscribe(LISTENER, ["reviews"])
    ads.subscribe(CLUSTER, [V1])
    ads.outgoing()
    ads.receive(_response(LISTENER, "lv1", "n1", canary[LISTENER]["reviews"]))
    ads.receive(_response(CLUSTER, "cv1", "n2", _bad_cluster(V1)))  # NACKed: no version
    ads.reset()  # the stream broke before the ACK/NACK went out
    lds, cds = ads.outgoing()
    assert lds.node.id == "frontend-1" and not cds.HasField("node")
    assert (lds.type_url, lds.version_info, lds.response_nonce) == (LISTENER, "lv1", "")
    assert (cds.type_url, cds.version_info, cds.HasField("error_detail")) == (CLUSTER, "", False)
    assert "reviews" in ads.resources(LISTENER)  # last good config kept across streams


def test_a_route_regex_re2_refuses_is_nacked():
    """A backtracking-only pattern arriving over xDS is refused, not half-enforced."""
    ads = AdsClientProtocol(NODE)
    ads.subscribe(ROUTE, [RDS])
    ads.outgoing()
    config = route_pb2.RouteConfiguration(name=RDS, virtual_hosts=[rc_pb2.VirtualHost(
        name="v", domains=["*"], routes=[rc_pb2.Route(
            match=rc_pb2.RouteMatch(safe_regex={"regex": r"/(a)\1"}), route={"cluster": V1})])])
    (error,) = ads.receive(_response(ROUTE, "v1", "n1", config))
    assert isinstance(error, ResourceError) and error.name == RDS
    (nack,) = ads.outgoing()
    assert nack.response_nonce == "n1" and nack.error_detail.code == code_pb2.INVALID_ARGUMENT
    assert "invalid escape sequence" in nack.error_detail.message
