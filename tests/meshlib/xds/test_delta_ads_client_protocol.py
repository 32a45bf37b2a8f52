"""The sans-IO delta ADS client: subscriptions as changes, per-resource versions, ACK /
NACK by nonce, gRFC A46, removals, reconnects and seeding. No sockets."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import message
from google.rpc import code_pb2, status_pb2

from meshlib.xds import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    AdsClientProtocol,
    CachedResource,
    DeltaAdsClientProtocol,
    ResourceChanged,
    ResourceError,
    ResourceRemoved,
    decode_cluster,
)
from tests.meshlib.xds.xds_models import OWN, RDS, V1, V2, pack

NODE = base_pb2.Node(id="frontend-1")


def _resource(msg: message.Message, version: str, name: str | None = None,
              ) -> discovery_pb2.Resource:
    return discovery_pb2.Resource(name=name if name is not None else msg.name,  # type: ignore[attr-defined]
                                  version=version, resource=pack(msg))


def _response(type_url: str, nonce: str, *resources: discovery_pb2.Resource,
              removed: tuple[str, ...] = (), system_version: str = "s1",
              ) -> discovery_pb2.DeltaDiscoveryResponse:
    return discovery_pb2.DeltaDiscoveryResponse(
        type_url=type_url, nonce=nonce, system_version_info=system_version,
        resources=list(resources), removed_resources=list(removed))


def _bad_cluster(name: str) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC)


def _cds(canary):  # type: ignore[no-untyped-def]
    ads = DeltaAdsClientProtocol(NODE)
    ads.subscribe(CLUSTER, [V1, V2])
    ads.outgoing()
    ads.receive(_response(CLUSTER, "n1", _resource(canary[CLUSTER][V1], "a1"),
                          _resource(canary[CLUSTER][V2], "b1")))
    ads.outgoing()
    return ads


def test_has_the_outward_shape_of_the_sotw_state_machine():
    public = {n for n in dir(AdsClientProtocol) if not n.startswith("_")}
    assert public <= {n for n in dir(DeltaAdsClientProtocol) if not n.startswith("_")}


def test_first_request_subscribes_with_node_and_no_nonce():
    ads = DeltaAdsClientProtocol(NODE)
    ads.subscribe(LISTENER, ["reviews", "ratings"])
    ads.subscribe(ROUTE, [RDS])
    first, second = ads.outgoing()
    assert first.node.id == "frontend-1" and not second.HasField("node")
    assert (first.type_url, list(first.resource_names_subscribe), first.response_nonce,
            dict(first.initial_resource_versions)) == (LISTENER, ["ratings", "reviews"], "", {})
    assert list(second.resource_names_subscribe) == [RDS]
    assert ads.outgoing() == []


def test_ack_carries_the_nonce_and_versions_are_per_resource(canary):
    ads = DeltaAdsClientProtocol(NODE)
    ads.subscribe(CLUSTER, [V1, V2])
    ads.outgoing()
    events = ads.receive(_response(CLUSTER, "n1", _resource(canary[CLUSTER][V1], "a1"),
                                   _resource(canary[CLUSTER][V2], "b1")))
    assert [(type(e), e.name, e.version) for e in events] == [
        (ResourceChanged, V1, "a1"), (ResourceChanged, V2, "b1")]
    (ack,) = ads.outgoing()
    assert (ack.response_nonce, ack.HasField("error_detail"), list(ack.resource_names_subscribe),
            ack.HasField("node")) == ("n1", False, [], False)
    assert ads.version(CLUSTER) == "s1"
    # Same value at a new version: no event, but the new version is what it has now.
    assert ads.receive(_response(CLUSTER, "n2", _resource(canary[CLUSTER][V1], "a2"))) == []
    assert ads.cached_resources(CLUSTER)[V1].version == "a2"
    assert ads.cached_resources(CLUSTER)[V2].version == "b1"
    assert ads.cached_resources(CLUSTER)[V1].resource == pack(canary[CLUSTER][V1])


def test_subscription_changes_are_deltas_and_ride_on_an_ack(canary):
    ads = _cds(canary)
    ads.subscribe(CLUSTER, [OWN])
    (request,) = ads.outgoing()
    assert (list(request.resource_names_subscribe), list(request.resource_names_unsubscribe),
            request.response_nonce) == ([OWN], [], "")  # not an ACK: no nonce
    ads.receive(_response(CLUSTER, "n2", _resource(canary[CLUSTER][OWN], "c1")))
    ads.unsubscribe(CLUSTER, [V1])  # before the ACK went out: one request does both
    (request,) = ads.outgoing()
    assert (list(request.resource_names_unsubscribe), request.response_nonce) == ([V1], "n2")
    assert V1 not in ads.resources(CLUSTER) and ads.subscriptions(CLUSTER) == {V2, OWN}
    ads.subscribe(CLUSTER, [V2])  # already subscribed: nothing due
    assert ads.outgoing() == []


def test_resubscribing_before_the_request_went_out_unsubscribes_first(canary):
    ads = _cds(canary)
    ads.unsubscribe(CLUSTER, [V1])
    ads.subscribe(CLUSTER, [V1])  # the cached value is gone: the server must resend it
    first, second = ads.outgoing()
    assert list(first.resource_names_unsubscribe) == [V1]
    assert list(second.resource_names_subscribe) == [V1]
    ads.subscribe(CLUSTER, ["fresh"])
    ads.unsubscribe(CLUSTER, ["fresh"])  # never told to the server: nothing to say
    assert ads.outgoing() == []


def test_invalid_resource_keeps_previous_value_and_version_and_nack_names_it(canary):
    ads = _cds(canary)
    good_v1 = ads.cached_resources(CLUSTER)[V1]
    changed_v2 = cluster_pb2.Cluster()
    changed_v2.CopyFrom(canary[CLUSTER][V2])
    changed_v2.circuit_breakers.thresholds.add().max_requests.value = 5
    events = ads.receive(_response(CLUSTER, "n2", _resource(_bad_cluster(V1), "a2"),
                                   _resource(changed_v2, "b2"), system_version="s2"))
    (error,) = [e for e in events if isinstance(e, ResourceError)]
    assert [e.name for e in events if isinstance(e, ResourceChanged)] == [V2]
    assert error.name == V1 and error.has_previous and "STATIC" in str(error.error)
    assert ads.cached_resources(CLUSTER)[V1] == good_v1  # value AND version kept
    assert ads.cached_resources(CLUSTER)[V2].version == "b2"
    (nack,) = ads.outgoing()
    assert nack.response_nonce == "n2" and nack.error_detail.code == code_pb2.INVALID_ARGUMENT
    assert V1 in nack.error_detail.message and V2 not in nack.error_detail.message
    assert ads.version(CLUSTER) == "s1"  # the last ACKed one
    ads.reset()  # a reconnect asks for the version it kept, so V1 is sent again
    (request,) = ads.outgoing()
    assert dict(request.initial_resource_versions) == {V1: "a1", V2: "b2"}


def test_invalid_resource_never_seen_reports_no_previous(canary):
    ads = DeltaAdsClientProtocol(NODE)
    ads.subscribe(CLUSTER, [V1])
    ads.outgoing()
    (event,) = ads.receive(_response(CLUSTER, "n1", _resource(_bad_cluster(V1), "a1")))
    assert isinstance(event, ResourceError) and not event.has_previous
    assert V1 not in ads.resources(CLUSTER)


def test_resource_delivered_under_another_name_is_invalid(canary):
    ads = DeltaAdsClientProtocol(NODE)
    ads.subscribe(CLUSTER, [V1, V2])
    ads.outgoing()
    (event,) = ads.receive(_response(CLUSTER, "n1", _resource(canary[CLUSTER][V1], "a1", V2)))
    assert isinstance(event, ResourceError) and event.name == V2
    assert "delivered as" in ads.outgoing()[0].error_detail.message


def test_unparseable_resource_is_nacked_and_named_by_its_resource_name(canary):
    ads = DeltaAdsClientProtocol(NODE)
    ads.subscribe(CLUSTER, [V1])
    ads.outgoing()
    garbage = discovery_pb2.Resource(name=V1, version="x")
    garbage.resource.type_url, garbage.resource.value = CLUSTER, b"\xff\xff"
    (event,) = ads.receive(_response(CLUSTER, "n1", garbage))
    assert isinstance(event, ResourceError) and event.name == V1
    assert "cannot parse" in ads.outgoing()[0].error_detail.message


def test_heartbeat_without_a_body_changes_nothing(canary):
    ads = _cds(canary)
    heartbeat = discovery_pb2.Resource(name=V1, version="a1")
    assert ads.receive(_response(CLUSTER, "n2", heartbeat)) == []
    assert set(ads.resources(CLUSTER)) == {V1, V2}
    assert not ads.outgoing()[0].HasField("error_detail")


def test_removed_resources_are_removed_once(canary):
    ads = _cds(canary)
    assert ads.receive(_response(CLUSTER, "n2", removed=(V1, "not-subscribed"))) == [
        ResourceRemoved(CLUSTER, V1)]
    assert set(ads.resources(CLUSTER)) == {V2} and V1 not in ads.cached_resources(CLUSTER)
    assert ads.receive(_response(CLUSTER, "n3", removed=(V1,))) == []
    ads.receive(_response(CLUSTER, "n4", _resource(canary[CLUSTER][V1], "a3")))
    assert ads.receive(_response(CLUSTER, "n5", removed=(V1,))) == [ResourceRemoved(CLUSTER, V1)]


def test_never_had_names_removed_lds_at_once_rds_left_to_the_timer(canary):
    """As in state of the world: LDS/CDS absence is known, RDS/EDS absence is not."""
    ads = DeltaAdsClientProtocol(NODE)
    ads.subscribe(LISTENER, ["nope"])
    ads.subscribe(ROUTE, ["no-route"])
    ads.subscribe(ENDPOINT, ["no-eds"])
    ads.outgoing()
    assert ads.receive(_response(LISTENER, "l1", removed=("nope",))) == [
        ResourceRemoved(LISTENER, "nope")]
    assert ads.receive(_response(ROUTE, "r1", removed=("no-route",))) == []
    assert ads.receive(_response(ENDPOINT, "e1", removed=("no-eds",))) == []
    ads.receive(_response(ROUTE, "r2", _resource(canary[ROUTE][RDS], "v1", "no-route")))
    assert "no-route" not in ads.resources(ROUTE)  # misnamed: a NACK, not a value


def test_not_found_resource_error_removes(canary):
    ads = _cds(canary)
    response = _response(CLUSTER, "n2")
    response.resource_errors.add(resource_name=discovery_pb2.ResourceName(name=V2),
                                 error_detail=status_pb2.Status(code=code_pb2.NOT_FOUND))
    assert ads.receive(response) == [ResourceRemoved(CLUSTER, V2)]


def test_unknown_type_is_nacked_and_unsubscribed_types_do_not_become_wildcard(canary):
    ads = DeltaAdsClientProtocol(NODE)
    ads.subscribe(LISTENER, ["reviews"])
    ads.outgoing()
    assert ads.receive(_response("type.googleapis.com/nope.Nope", "x1")) == []
    ads.receive(_response(CLUSTER, "c1", _resource(canary[CLUSTER][V1], "a1")))  # unasked
    nope, cds = ads.outgoing()
    assert nope.response_nonce == "x1" and "unsupported" in nope.error_detail.message
    assert (cds.response_nonce, list(cds.resource_names_subscribe),
            list(cds.resource_names_unsubscribe)) == ("c1", [], ["*"])
    assert ads.resources(CLUSTER) == {}


def test_reset_resubscribes_everything_with_initial_resource_versions(canary):
    ads = DeltaAdsClientProtocol(NODE)
    ads.subscribe(LISTENER, ["reviews"])
    ads.subscribe(CLUSTER, [V1, V2])
    ads.outgoing()
    ads.receive(_response(LISTENER, "n1", _resource(canary[LISTENER]["reviews"], "l1")))
    ads.receive(_response(CLUSTER, "n2", _resource(canary[CLUSTER][V1], "a1"),
                          _resource(_bad_cluster(V2), "b1")))
    ads.unsubscribe(CLUSTER, [V1])
    ads.reset()  # the stream broke before the ACK/NACK went out
    lds, cds = ads.outgoing()
    assert lds.node.id == "frontend-1" and not cds.HasField("node")
    assert (list(lds.resource_names_subscribe), dict(lds.initial_resource_versions),
            lds.response_nonce) == (["reviews"], {"reviews": "l1"}, "")
    assert (list(cds.resource_names_subscribe), dict(cds.initial_resource_versions),
            list(cds.resource_names_unsubscribe), cds.HasField("error_detail")) == (
        [V2], {}, [], False)
    assert "reviews" in ads.resources(LISTENER)  # last good config kept across streams


def _entry(canary, type_url: str, name: str, version: str) -> CachedResource:  # type: ignore[no-untyped-def]
    resource = pack(canary[type_url][name])
    return CachedResource(name, decode_cluster(resource), version, resource)


def test_seed_fills_subscribed_names_and_their_versions_go_on_the_first_request(canary):
    ads = DeltaAdsClientProtocol(NODE)
    ads.subscribe(CLUSTER, [V1, V2])
    ads.seed(CLUSTER, [_entry(canary, CLUSTER, V1, "a1"), _entry(canary, CLUSTER, OWN, "c1")])
    assert set(ads.resources(CLUSTER)) == {V1}  # OWN is not subscribed
    ads.seed(ROUTE, [])  # nothing subscribed of that type: ignored
    (request,) = ads.outgoing()
    assert dict(request.initial_resource_versions) == {V1: "a1"}
    # The server's answer replaces the seeded value; a later seed does not override it.
    ads.receive(_response(CLUSTER, "n1", _resource(canary[CLUSTER][V1], "a2")))
    ads.seed(CLUSTER, [_entry(canary, CLUSTER, V1, "a1")])
    assert ads.cached_resources(CLUSTER)[V1].version == "a2"


def test_sotw_seed_sets_version_info_until_a_response_arrives(canary):
    ads = AdsClientProtocol(NODE)
    ads.subscribe(CLUSTER, [V1])
    ads.seed(CLUSTER, [_entry(canary, CLUSTER, V1, "")], "v7")
    (request,) = ads.outgoing()
    assert (request.version_info, list(request.resource_names)) == ("v7", [V1])
    assert ads.resources(CLUSTER)[V1].name == V1
    response = discovery_pb2.DiscoveryResponse(type_url=CLUSTER, version_info="v8", nonce="n1",
                                               resources=[pack(canary[CLUSTER][V1])])
    assert ads.receive(response) == []  # the same value: no event
    ads.seed(CLUSTER, [], "v7")
    assert ads.version(CLUSTER) == "v8"


def test_only_the_latest_response_is_answered_in_both_protocols(canary):
    """Two responses before ``outgoing()``: the answer is for the second one only."""
    sotw = AdsClientProtocol(NODE)
    sotw.subscribe(CLUSTER, [V1])
    sotw.outgoing()
    for version, cluster in (("v1", _bad_cluster(V1)), ("v2", canary[CLUSTER][V1])):
        sotw.receive(discovery_pb2.DiscoveryResponse(
            type_url=CLUSTER, version_info=version, nonce=version, resources=[pack(cluster)]))
    (ack,) = sotw.outgoing()
    assert (ack.response_nonce, ack.version_info, ack.HasField("error_detail")) == (
        "v2", "v2", False)
    delta = DeltaAdsClientProtocol(NODE)
    delta.subscribe(CLUSTER, [V1])
    delta.outgoing()
    delta.receive(_response(CLUSTER, "n1", _resource(_bad_cluster(V1), "a1")))
    delta.receive(_response(CLUSTER, "n2", _resource(canary[CLUSTER][V1], "a2")))
    (ack,) = delta.outgoing()
    assert (ack.response_nonce, ack.HasField("error_detail")) == ("n2", False)
