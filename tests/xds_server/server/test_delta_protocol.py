"""Incremental ADS state machine, without sockets."""

from __future__ import annotations

from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from tests.xds_server.server.ads_test_client import delta_req
from tests.xds_server.xds_test_resources import grpc_node, mesh, names_of
from xds_server.cache import Snapshot, SnapshotCache
from xds_server.resources import CLUSTER, ENDPOINT, LISTENER
from xds_server.server import CallbackFuncs, DeltaStream

GROUP = "grpc/default"
Response = discovery_pb2.DeltaDiscoveryResponse


def snap(**clusters: int) -> Snapshot:
    """One ``svc`` service whose clusters have one endpoint port each."""
    return Snapshot.from_messages(mesh({"svc": {c: (p,) for c, p in clusters.items()}}))


class Harness:
    def __init__(self, snapshot: Snapshot | None = None, stream_id: int = 1) -> None:
        self.cache = SnapshotCache()
        if snapshot is not None:
            self.cache.set_snapshot(GROUP, snapshot)
        self.events: list[tuple[str, str]] = []
        self.stream_id = stream_id
        self.stream = self.new_stream()

    def new_stream(self) -> DeltaStream:
        self.first = True
        return DeltaStream(self.stream_id, self.cache, callbacks=CallbackFuncs(
            ack=lambda sid, node, t, v: self.events.append(("ack", v)),
            nack=lambda sid, node, t, err: self.events.append(("nack", err.message))))

    def send(self, request: discovery_pb2.DeltaDiscoveryRequest) -> list[Response]:
        if self.first:
            request.node.CopyFrom(grpc_node())
            self.first = False
        self.stream.receive(request)
        return self.take()

    def take(self) -> list[Response]:
        return [out.response for out in self.stream.drain()]

    def set(self, snapshot: Snapshot) -> list[Response]:
        self.cache.set_snapshot(GROUP, snapshot)
        return self.take()

    def ack(self, response: Response, **kw: Any) -> list[Response]:
        return self.send(delta_req(response.type_url, nonce=response.nonce, **kw))


def versions(response: Response) -> dict[str, str]:
    return {r.name: r.version for r in response.resources}


def test_wildcard_gets_everything_with_the_snapshot_version() -> None:
    s = snap(a=1, b=2)
    h = Harness(s)
    [r] = h.send(delta_req(CLUSTER))
    assert names_of(r) == ["a", "b"] and list(r.removed_resources) == []
    assert r.system_version_info == s.version
    assert versions(r)["a"] == s.get(CLUSTER, "a").version
    assert h.stream.status().types[CLUSTER].wildcard


def test_first_wildcard_is_answered_even_when_empty() -> None:
    h = Harness(Snapshot.from_messages({}))
    [r] = h.send(delta_req(LISTENER, ["*"]))
    assert list(r.resources) == []


def test_unknown_subscribed_names_are_reported_removed_once() -> None:
    h = Harness(snap(a=1))
    [r] = h.send(delta_req(ENDPOINT, ["a", "ghost"]))
    assert names_of(r) == ["a"] and list(r.removed_resources) == ["ghost"]
    assert h.ack(r) == []
    assert h.set(snap(a=1, b=2)) == []  # nothing subscribed changed
    [r2] = h.set(snap(a=1, ghost=3))
    assert names_of(r2) == ["ghost"] and list(r2.removed_resources) == []


def test_add_update_remove_carry_only_the_change() -> None:
    h = Harness(snap(a=1, b=2))
    h.ack(h.send(delta_req(CLUSTER))[0])
    [added] = h.set(snap(a=1, b=2, c=3))
    assert names_of(added) == ["c"] and list(added.removed_resources) == []
    h.ack(added)
    [updated] = h.send(delta_req(ENDPOINT, ["a", "b"]))
    h.ack(updated)
    [eds] = h.set(snap(a=10, b=2, c=3))
    assert eds.type_url == ENDPOINT and names_of(eds) == ["a"]
    h.ack(eds)
    pushes = h.set(snap(a=10, c=3))
    assert [(p.type_url, list(p.removed_resources)) for p in pushes] == [
        (CLUSTER, ["b"]), (ENDPOINT, ["b"])]


def test_unsubscribed_names_are_not_pushed() -> None:
    h = Harness(snap(a=1, b=2))
    h.ack(h.send(delta_req(ENDPOINT, ["a", "b"]))[0])
    assert h.send(delta_req(ENDPOINT, unsubscribe=["b"])) == []
    assert h.set(snap(a=1, b=20)) == []
    assert h.stream.status().types[ENDPOINT].names == ("a",)
    [again] = h.send(delta_req(ENDPOINT, ["b"]))  # re-subscribing sends it again
    assert names_of(again) == ["b"]


def test_unsubscribing_the_wildcard() -> None:
    h = Harness(snap(a=1, b=2))
    h.ack(h.send(delta_req(CLUSTER, ["*", "a"]))[0])
    assert h.send(delta_req(CLUSTER, unsubscribe=["*"])) == []
    status = h.stream.status().types[CLUSTER]
    assert not status.wildcard and set(status.resources) == {"a"}
    assert h.set(snap(a=1, b=2, c=3)) == []


def test_ack_and_nack() -> None:
    h = Harness(snap(a=1))
    [r] = h.send(delta_req(CLUSTER))
    h.ack(r)
    assert h.events == [("ack", r.system_version_info)]
    [r2] = h.set(snap(a=1, b=2))
    assert h.send(delta_req(CLUSTER, nonce=r2.nonce, error="bad cluster b")) == []
    assert h.events[-1] == ("nack", "bad cluster b")
    status = h.stream.status().types[CLUSTER]
    assert status.nacks == 1 and status.acked_version == r.system_version_info
    [r3] = h.set(snap(a=1, b=2, c=3))  # not a resend of b: only what changed since
    assert names_of(r3) == ["c"]


def test_stale_nonce_still_applies_subscriptions() -> None:
    h = Harness(snap(a=1, b=2))
    [r1] = h.send(delta_req(ENDPOINT, ["a"]))
    h.ack(r1)
    [r2] = h.set(snap(a=5, b=2))
    [r3] = h.send(delta_req(ENDPOINT, ["b"], nonce=r1.nonce))  # stale, but a subscription
    assert names_of(r3) == ["b"]
    assert h.stream.status().types[ENDPOINT].acks == 1
    assert r2.nonce != r3.nonce


def test_reconnect_honours_initial_resource_versions() -> None:
    s = snap(a=1, b=2, c=3)
    h = Harness(s)
    have = {"a": s.get(CLUSTER, "a").version, "b": "outdated", "gone": "v0"}
    h.stream = h.new_stream()
    [r] = h.send(delta_req(CLUSTER, initial=have))
    assert names_of(r) == ["b", "c"]  # a is current; b is stale; c is new
    assert list(r.removed_resources) == ["gone"]


def test_reconnect_with_everything_current_sends_nothing_for_named_resources() -> None:
    s = snap(a=1)
    h = Harness(s)
    assert h.send(delta_req(ENDPOINT, ["a"], initial={"a": s.get(ENDPOINT, "a").version})) == []


def test_initial_versions_after_the_first_request_are_ignored() -> None:
    h = Harness(snap(a=1))
    h.ack(h.send(delta_req(ENDPOINT, ["a"]))[0])
    assert h.send(delta_req(ENDPOINT, initial={"a": "other"})) == []


def test_close_cancels_watches() -> None:
    h = Harness(snap(a=1))
    h.ack(h.send(delta_req(CLUSTER))[0])
    assert len(h.cache.open_watches()) == 1
    h.stream.close()
    assert h.cache.open_watches() == ()
