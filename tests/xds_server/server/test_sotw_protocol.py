"""State-of-the-world ADS state machine, without sockets."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from tests.xds_server.server.ads_test_client import sotw_req
from tests.xds_server.xds_test_resources import grpc_node, mesh, names_of
from xds_server.cache import Snapshot, SnapshotCache
from xds_server.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_server.server import CallbackFuncs, SotwStream, StreamRejected

GROUP = "grpc/default"
NODE = grpc_node()
V1V2 = ("reviews-v1", "reviews-v2")
Response = discovery_pb2.DiscoveryResponse


def eds(port1: int, port2: int) -> Snapshot:
    """The default mesh with reviews-v1/v2 endpoints on other ports (an EDS-only change)."""
    return Snapshot.from_messages(mesh({"reviews": {"reviews-v1": (port1,),
                                                    "reviews-v2": (port2,)}}))


class Harness:
    def __init__(self, snapshot: Snapshot | None = None, **callbacks: Any) -> None:
        self.cache = SnapshotCache()
        if snapshot is not None:
            self.cache.set_snapshot(GROUP, snapshot)
        self.events: list[tuple[str, Any]] = []
        self.stream = SotwStream(1, self.cache, callbacks=CallbackFuncs(
            ack=lambda sid, node, t, v: self.events.append(("ack", (t, v))),
            nack=lambda sid, node, t, err: self.events.append(("nack", (t, err.message))),
            **callbacks))
        self.first = True

    def send(self, request: discovery_pb2.DiscoveryRequest) -> list[Response]:
        if self.first:
            request.node.CopyFrom(NODE)
            self.first = False
        self.stream.receive(request)
        return self.take()

    def take(self) -> list[Response]:
        return [out.response for out in self.stream.drain()]

    def set(self, snapshot: Snapshot) -> list[Response]:
        self.cache.set_snapshot(GROUP, snapshot)
        return self.take()

    def subscribe_all(self) -> dict[str, Response]:
        """gRPC's usual start: LDS, RDS, CDS, EDS, each ACKed."""
        got = {}
        for type_url, names in ((LISTENER, ["reviews"]), (ROUTE, ["reviews"]),
                                (CLUSTER, V1V2), (ENDPOINT, V1V2)):
            [response] = self.send(sotw_req(type_url, names))
            assert self.send(sotw_req(type_url, names, nonce=response.nonce,
                                      version=response.version_info)) == []
            got[type_url] = response
        return got




def test_first_request_is_answered_with_the_subscribed_resources() -> None:
    snapshot = Snapshot.from_messages(mesh())
    h = Harness(snapshot)
    [response] = h.send(sotw_req(CLUSTER, ["reviews-v1"]))
    assert names_of(response) == ["reviews-v1"]
    assert response.version_info == snapshot.version_of(CLUSTER, ["reviews-v1"])
    assert response.type_url == CLUSTER and response.nonce


def test_ack_is_recorded_and_not_answered() -> None:
    h = Harness(Snapshot.from_messages(mesh()))
    [r] = h.send(sotw_req(CLUSTER, V1V2))
    assert h.send(sotw_req(CLUSTER, V1V2, nonce=r.nonce, version=r.version_info)) == []
    status = h.stream.status().types[CLUSTER]
    assert status.acked_version == r.version_info == status.sent_version
    assert status.acks == 1 and h.events == [("ack", (CLUSTER, r.version_info))]


def test_nack_is_counted_not_resent_and_the_next_change_is_pushed() -> None:
    first = Snapshot.from_messages(mesh())
    h = Harness(first)
    [r] = h.send(sotw_req(CLUSTER, V1V2))
    assert h.send(sotw_req(CLUSTER, V1V2, nonce=r.nonce, error="no way")) == []
    status = h.stream.status().types[CLUSTER]
    assert status.nacks == 1 and status.last_nack == "no way" and status.acked_version == ""
    assert h.events == [("nack", (CLUSTER, "no way"))]
    assert h.set(Snapshot.from_messages(mesh(weights={"reviews": {"reviews-v1": 5}}))) == []
    changed = eds(1, 2)
    assert h.set(changed) == []  # CDS content unchanged: still nothing to send
    third = mesh({"reviews": {"reviews-v1": (1,), "reviews-v2": (2,)}})
    third[CLUSTER]["reviews-v1"].connect_timeout.seconds = 3
    [push] = h.set(Snapshot.from_messages(third))
    assert push.type_url == CLUSTER and push.version_info != r.version_info
    h.send(sotw_req(CLUSTER, V1V2, nonce=push.nonce, version=push.version_info))
    assert h.stream.status().types[CLUSTER].last_nack == ""


def test_stale_nonce_is_ignored_subscription_included() -> None:
    h = Harness(Snapshot.from_messages(mesh()))
    [e1] = h.send(sotw_req(ENDPOINT, ["reviews-v1"]))
    h.send(sotw_req(ENDPOINT, ["reviews-v1"], nonce=e1.nonce, version=e1.version_info))
    [e2] = h.set(Snapshot.from_messages(mesh({"reviews": {"reviews-v1": (9,),
                                                          "reviews-v2": (2,)}})))
    # Sent before the client saw e2: stale, so ignored — its new subscription too.
    assert h.send(sotw_req(ENDPOINT, V1V2, nonce=e1.nonce, version=e1.version_info)) == []
    status = h.stream.status().types[ENDPOINT]
    assert status.names == ("reviews-v1",) and status.acks == 1
    # The client repeats it with the latest nonce: ACK + subscription change.
    [e3] = h.send(sotw_req(ENDPOINT, V1V2, nonce=e2.nonce, version=e2.version_info))
    assert names_of(e3) == list(V1V2)
    assert h.stream.status().types[ENDPOINT].acks == 2


def test_subscription_change_inside_an_ack_is_answered_and_counted_once() -> None:
    h = Harness(Snapshot.from_messages(mesh()))
    [r] = h.send(sotw_req(ENDPOINT, ["reviews-v1"]))
    assert h.send(sotw_req(ENDPOINT, ["reviews-v1"], nonce=r.nonce, version=r.version_info)) == []
    # gRPC: new watch → same nonce again, more names
    [r2] = h.send(sotw_req(ENDPOINT, V1V2, nonce=r.nonce, version=r.version_info))
    assert names_of(r2) == list(V1V2)
    assert h.stream.status().types[ENDPOINT].acks == 1


def test_unknown_lds_cds_names_are_answered_at_once_rds_eds_wait() -> None:
    h = Harness(Snapshot.from_messages(mesh()))
    [lds] = h.send(sotw_req(LISTENER, ["ghost"]))
    assert list(lds.resources) == []
    # gRFC A88: an explicit NOT_FOUND, which gRPC reads at once (omission it does not)
    [error] = lds.resource_errors
    assert error.resource_name.name == "ghost" and error.error_detail.code == 5
    [cds] = h.send(sotw_req(CLUSTER, ["ghost"]))
    assert list(cds.resources) == []
    assert h.send(sotw_req(ROUTE, ["ghost"])) == []
    assert h.send(sotw_req(ENDPOINT, ["ghost"])) == []
    # adding an unknown name to an existing LDS subscription: answered at once too
    h.send(sotw_req(LISTENER, ["ghost"], nonce=lds.nonce, version=lds.version_info))
    [lds2] = h.send(sotw_req(LISTENER, ["ghost", "reviews"], nonce=lds.nonce))
    assert names_of(lds2) == ["reviews"]
    assert [e.resource_name.name for e in lds2.resource_errors] == ["ghost"]
    h.send(sotw_req(LISTENER, ["ghost", "reviews"], nonce=lds2.nonce, version=lds2.version_info))
    [lds3] = h.send(sotw_req(LISTENER, ["ghost", "reviews", "ghost2"], nonce=lds2.nonce))
    assert names_of(lds3) == ["reviews"]


def test_missing_rds_is_pushed_when_it_appears() -> None:
    h = Harness(Snapshot.from_messages(mesh()))
    assert h.send(sotw_req(ROUTE, ["other"])) == []
    both = mesh({"reviews": {"reviews-v1": (1,)}, "other": {"other": (2,)}})
    [rds] = h.set(Snapshot.from_messages(both))
    assert names_of(rds) == ["other"] and list(rds.resource_errors) == []


def test_lds_cds_wildcard_empty_and_star() -> None:
    two = mesh({"a": {"a": (1,)}, "b": {"b": (2,)}})
    h = Harness(Snapshot.from_messages(two))
    [lds] = h.send(sotw_req(LISTENER))
    assert names_of(lds) == ["a", "b"]
    [cds] = h.send(sotw_req(CLUSTER, ["*"]))
    assert names_of(cds) == ["a", "b"]
    h.send(sotw_req(LISTENER, nonce=lds.nonce, version=lds.version_info))
    h.send(sotw_req(CLUSTER, ["*"], nonce=cds.nonce, version=cds.version_info))
    # a deletion reaches wildcard subscribers as an omission
    pushes = h.set(Snapshot.from_messages(mesh({"a": {"a": (1,)}})))
    assert [(p.type_url, names_of(p)) for p in pushes] == [(CLUSTER, ["a"]), (LISTENER, ["a"])]
    # an empty list is not a wildcard for RDS/EDS
    assert h.send(sotw_req(ROUTE)) == []


def test_empty_list_after_explicit_names_unsubscribes() -> None:
    h = Harness(Snapshot.from_messages(mesh()))
    [r] = h.send(sotw_req(CLUSTER, ["reviews-v1"]))
    h.send(sotw_req(CLUSTER, [], nonce=r.nonce, version=r.version_info))
    assert h.stream.status().types[CLUSTER].wildcard is False
    assert h.set(Snapshot.from_messages(mesh({"reviews": {"reviews-v3": (1,)}}))) == []


def test_reconnect_with_the_current_version_is_not_resent() -> None:
    snapshot = Snapshot.from_messages(mesh())
    h = Harness(snapshot)
    version = snapshot.version_of(ROUTE, ["reviews"])
    assert h.send(sotw_req(ROUTE, ["reviews"], version=version, nonce="42")) == []
    assert h.stream.status().types[ROUTE].acked_version == version
    assert h.send(sotw_req(ENDPOINT, V1V2, version="stale", nonce="43")) != []
    # and a later change is pushed
    [rds] = h.set(Snapshot.from_messages(mesh(weights={"reviews": {"reviews-v1": 3,
                                                                   "reviews-v2": 1}})))
    assert rds.type_url == ROUTE


def test_pushes_carry_only_changed_types_in_ads_order() -> None:
    h = Harness(Snapshot.from_messages(mesh()))
    h.subscribe_all()
    eds_only = mesh({"reviews": {"reviews-v1": (1,), "reviews-v2": (50052,)}})
    [push] = h.set(Snapshot.from_messages(eds_only))
    assert push.type_url == ENDPOINT and names_of(push) == list(V1V2)
    h.send(sotw_req(ENDPOINT, V1V2, nonce=push.nonce, version=push.version_info))
    everything = mesh({"reviews": {"reviews-v1": (7,), "reviews-v2": (8,)}},
                      weights={"reviews": {"reviews-v1": 1, "reviews-v2": 9}})
    for name in V1V2:
        everything[CLUSTER][name].connect_timeout.seconds = 2
    everything[LISTENER]["reviews"].stat_prefix = "changed"
    pushes = h.set(Snapshot.from_messages(everything))
    assert [p.type_url for p in pushes] == [CLUSTER, ENDPOINT, LISTENER, ROUTE]


def test_no_second_push_before_the_first_is_acked() -> None:
    h = Harness(Snapshot.from_messages(mesh()))
    [r] = h.send(sotw_req(ENDPOINT, V1V2))
    h.send(sotw_req(ENDPOINT, V1V2, nonce=r.nonce, version=r.version_info))
    [p1] = h.set(eds(1, 2))
    last = eds(3, 4)
    assert h.set(last) == []
    [p2] = h.send(sotw_req(ENDPOINT, V1V2, nonce=p1.nonce, version=p1.version_info))
    assert p2.version_info == last.version_of(ENDPOINT, V1V2)


def test_request_hook_runs_before_the_watch_and_can_set_the_first_snapshot() -> None:
    cache_holder: list[Harness] = []
    seen: list[str] = []

    def on_request(sid: int, node: Any, request: Any) -> None:
        seen.append(node.id)
        h = cache_holder[0]
        if h.cache.get_snapshot(GROUP) is None:
            h.cache.set_snapshot(GROUP, Snapshot.from_messages(mesh()))

    h = Harness(stream_request=on_request)
    cache_holder.append(h)
    [r] = h.send(sotw_req(CLUSTER, ["reviews-v1"]))
    assert names_of(r) == ["reviews-v1"] and seen == ["client-1"]


def test_node_is_kept_from_the_first_request() -> None:
    nodes: list[str] = []
    h = Harness(Snapshot.from_messages(mesh()),
                stream_request=lambda sid, node, req: nodes.append(node.id))
    [r] = h.send(sotw_req(CLUSTER, ["reviews-v1"]))
    h.send(sotw_req(CLUSTER, ["reviews-v1"], nonce=r.nonce, version=r.version_info))
    assert nodes == ["client-1", "client-1"]
    assert h.stream.status().group == GROUP and h.stream.status().node_id == "client-1"


def test_refusing_gate_raises_stream_rejected() -> None:
    def refuse(sid: int, node: Any, request: Any) -> None:
        raise PermissionError("unknown node")

    h = Harness(stream_request=refuse)
    with pytest.raises(StreamRejected, match="unknown node"):
        h.send(sotw_req(CLUSTER, ["a"]))


def test_unknown_and_missing_type_urls_are_harmless() -> None:
    h = Harness(Snapshot.from_messages(mesh()))
    assert h.send(sotw_req("type.googleapis.com/envoy.service.runtime.v3.Runtime", ["r"])) == []
    assert h.send(sotw_req("")) == []
    [r] = h.send(sotw_req(CLUSTER, ["reviews-v1"]))
    assert names_of(r) == ["reviews-v1"]


def test_close_cancels_every_watch() -> None:
    h = Harness(Snapshot.from_messages(mesh()))
    h.subscribe_all()
    assert len(h.cache.open_watches()) == 4
    h.stream.close()
    assert h.cache.open_watches() == ()
    assert h.set(Snapshot.from_messages(mesh({"x": {"x": (1,)}}))) == []
