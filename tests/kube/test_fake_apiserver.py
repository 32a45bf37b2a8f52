"""The fake API server, driven by the real ``kubernetes`` Python client: what the
control plane's informers, status writer, leader election and TokenReview
authenticator will see (kubectl's view is in test_fake_apiserver_kubectl.py)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.kube import FakeApiServer

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "deploy" / "crds"


def _cm(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


def _status(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def _grpcroute(name: str, backend: str = "reviews-v1") -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "reviews"}],
                     "rules": [{"backendRefs": [{"name": backend, "port": 50051}]}]}}


# Discovery -------------------------------------------------------------------------


def test_discovery_names_every_served_resource(kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client).get_api_resources()
    by_name = {r.name: r for r in core.resources}
    assert by_name["services"].short_names == ["svc"] and by_name["services"].namespaced
    assert "watch" in by_name["services"].verbs
    assert by_name["services/status"].verbs == ["get", "patch", "update"]
    assert by_name["serviceaccounts/token"].kind == "TokenRequest"
    assert not by_name["namespaces"].namespaced

    groups = {g.name: g for g in client.ApisApi(kube_client).get_api_versions().groups}
    assert {"discovery.k8s.io", "coordination.k8s.io", "authentication.k8s.io",
            "apiextensions.k8s.io", "gateway.networking.k8s.io"} <= set(groups)
    assert groups["gateway.networking.k8s.io"].preferred_version.version == "v1"
    assert client.VersionApi(kube_client).get_code().git_version.startswith("v1.32")


# CRUD, errors ----------------------------------------------------------------------


def test_create_get_list_patch_delete_and_status_errors(kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client)
    a = core.create_namespaced_config_map("default", _cm("a", app="x"))
    core.create_namespaced_config_map("default", _cm("b", app="y"))
    assert a.metadata.uid and int(a.metadata.resource_version) > 0
    assert core.read_namespaced_config_map("a", "default").data == {"k": "v"}

    listed = core.list_namespaced_config_map("default", label_selector="app in (x,z)")
    assert [c.metadata.name for c in listed.items] == ["a"]
    assert int(listed.metadata.resource_version) >= int(a.metadata.resource_version)
    by_field = core.list_config_map_for_all_namespaces(field_selector="metadata.name=b")
    assert [c.metadata.name for c in by_field.items] == ["b"]
    raw = json.loads(core.list_namespaced_config_map("default", _preload_content=False).read())
    assert raw["kind"] == "ConfigMapList" and "kind" not in raw["items"][0]  # as on the wire

    patched = core.patch_namespaced_config_map("a", "default", {"data": {"k2": "v2"}})
    assert patched.data == {"k": "v", "k2": "v2"}
    assert int(patched.metadata.resource_version) > int(a.metadata.resource_version)
    jp = core.patch_namespaced_config_map(
        "a", "default", [{"op": "remove", "path": "/data/k"}])
    assert jp.data == {"k2": "v2"}

    with pytest.raises(ApiException) as exists:
        core.create_namespaced_config_map("default", _cm("a"))
    assert exists.value.status == 409
    assert _status(exists.value)["reason"] == "AlreadyExists"
    assert _status(exists.value)["message"] == 'configmaps "a" already exists'

    core.delete_namespaced_config_map("a", "default", body=client.V1DeleteOptions(
        propagation_policy="Background"))
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map("a", "default")
    assert gone.value.status == 404 and _status(gone.value)["kind"] == "Status"
    assert _status(gone.value)["details"] == {"name": "a", "kind": "configmaps"}

    with pytest.raises(ApiException) as invalid:
        core.create_namespaced_config_map("default", _cm("Bad_Name"))
    assert invalid.value.status == 422 and _status(invalid.value)["reason"] == "Invalid"
    with pytest.raises(ApiException) as no_ns:
        core.create_namespaced_config_map("nowhere", _cm("c"))
    assert no_ns.value.status == 404
    assert _status(no_ns.value)["message"] == 'namespaces "nowhere" not found'


def test_service_defaults_and_strategic_merge_of_ports(kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client)
    svc = core.create_namespaced_service("default", {
        "metadata": {"name": "reviews"},
        "spec": {"ports": [{"name": "grpc", "port": 50051},
                           {"name": "http", "port": 8080}]}})
    assert svc.spec.cluster_ip.startswith("10.96.") and svc.spec.type == "ClusterIP"
    assert svc.spec.ports[0].protocol == "TCP" and svc.spec.ports[0].target_port == 50051
    # Ports merge by their key `port`: one entry changes, the other stays.
    patched = core.patch_namespaced_service("reviews", "default", {
        "spec": {"ports": [{"port": 8080, "appProtocol": "http"}]}})
    assert [(p.name, p.app_protocol) for p in patched.spec.ports] == [
        ("grpc", None), ("http", "http")]
    assert patched.spec.cluster_ip == svc.spec.cluster_ip
    # A status written through the main resource is ignored.
    ignored = core.patch_namespaced_service("reviews", "default", {
        "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}})
    assert ignored.status.load_balancer.ingress is None


def test_list_in_chunks_and_an_expired_continue_token(fake_kube: FakeApiServer,
                                                      kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client)
    for i in range(5):
        core.create_namespaced_config_map("default", _cm(f"cm-{i}"))
    first = core.list_namespaced_config_map("default", limit=2)
    assert [c.metadata.name for c in first.items] == ["cm-0", "cm-1"]
    assert first.metadata.remaining_item_count == 3
    core.create_namespaced_config_map("default", _cm("cm-late"))  # after the snapshot
    second = core.list_namespaced_config_map("default", limit=2,
                                             _continue=first.metadata._continue)
    assert [c.metadata.name for c in second.items] == ["cm-2", "cm-3"]
    assert second.metadata.resource_version == first.metadata.resource_version
    third = core.list_namespaced_config_map("default", limit=2,
                                            _continue=second.metadata._continue)
    assert [c.metadata.name for c in third.items] == ["cm-4"]  # consistent: no cm-late
    assert not third.metadata._continue

    fake_kube.compact()
    with pytest.raises(ApiException) as expired:
        core.list_namespaced_config_map("default", limit=2, _continue=first.metadata._continue)
    assert expired.value.status == 410 and _status(expired.value)["reason"] == "Expired"


# Watch -----------------------------------------------------------------------------


def test_watch_replays_events_after_a_resource_version(kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client)
    start = core.list_namespaced_config_map("default").metadata.resource_version
    made = core.create_namespaced_config_map("default", _cm("w"))
    changed = core.patch_namespaced_config_map("w", "default", {"data": {"k": "v2"}})
    core.delete_namespaced_config_map("w", "default")

    seen = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, "default",
                          resource_version=start, timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.resource_version,
                     event["object"].data))
        if len(seen) == 3:
            w.stop()
    assert [s[0] for s in seen] == ["ADDED", "MODIFIED", "DELETED"]
    assert seen[0][1] == made.metadata.resource_version
    assert seen[1][1] == changed.metadata.resource_version and seen[1][2] == {"k": "v2"}
    assert int(seen[2][1]) > int(seen[1][1])
    assert w.resource_version == seen[2][1]


def test_watch_streams_live_changes_and_bookmarks(fake_kube: FakeApiServer,
                                                  kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client)
    start = core.list_namespaced_config_map("default").metadata.resource_version
    events: list[tuple[str, str]] = []
    w = watch.Watch()

    def consume() -> None:
        for event in w.stream(core.list_namespaced_config_map, "default",
                              resource_version=start, allow_watch_bookmarks=True,
                              timeout_seconds=5):
            rv = (event["raw_object"]["metadata"]["resourceVersion"])
            events.append((event["type"], rv))
            if event["type"] == "BOOKMARK":
                w.stop()

    reader = threading.Thread(target=consume)
    reader.start()
    fake_kube.wait_for_watches("configmaps")
    core.create_namespaced_config_map("default", _cm("live"))
    core.create_namespaced_secret("default", {"metadata": {"name": "unrelated"}})
    fake_kube.send_bookmarks()
    reader.join(timeout=5)
    assert [e[0] for e in events] == ["ADDED", "BOOKMARK"]
    # The bookmark carries the newest revision, past the last configmap event.
    assert int(events[1][1]) == fake_kube.resource_version > int(events[0][1])
    assert w.resource_version == events[1][1]


def test_watch_timeout_ends_the_stream_with_a_last_bookmark(kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client)
    resp = core.list_namespaced_config_map("default", watch=True, timeout_seconds=1,
                                           allow_watch_bookmarks=True,
                                           resource_version="0", _preload_content=False)
    lines = [json.loads(line) for line in resp.read().splitlines()]  # returns after ~1 s
    assert lines[-1]["type"] == "BOOKMARK"
    assert set(lines[-1]["object"]) == {"kind", "apiVersion", "metadata"}
    assert lines[-1]["object"]["kind"] == "ConfigMap"


def test_watch_from_a_compacted_revision_is_410_expired(fake_kube: FakeApiServer,
                                                        kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client)
    old = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", _cm("after"))
    fake_kube.compact()

    # On the wire: HTTP 200, then one ERROR event holding a 410 Status.
    resp = core.list_namespaced_config_map("default", watch=True, resource_version=old,
                                           _preload_content=False)
    assert resp.status == 200
    (line,) = resp.read().splitlines()
    event = json.loads(line)
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
    assert event["object"]["message"].startswith(f"too old resource version: {old} (")

    # The client library raises it as ApiException(status=410).
    with pytest.raises(ApiException) as expired:
        for _ in watch.Watch().stream(core.list_namespaced_config_map, "default",
                                      resource_version=old, timeout_seconds=2):
            pass
    assert expired.value.status == 410

    # A list at that exact revision is gone too; a new list works.
    with pytest.raises(ApiException) as gone:
        core.list_namespaced_config_map("default", resource_version=old,
                                        resource_version_match="Exact")
    assert gone.value.status == 410
    assert [c.metadata.name for c in core.list_namespaced_config_map("default").items] == [
        "after"]


def test_watch_with_a_selector_sees_objects_leave_and_enter(fake_kube: FakeApiServer,
                                                            kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client)
    start = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", _cm("sel", mesh="on"))
    core.patch_namespaced_config_map("sel", "default", {"metadata": {"labels": {"mesh": "off"}}})
    core.patch_namespaced_config_map("sel", "default", {"metadata": {"labels": {"mesh": "on"}}})
    resp = core.list_namespaced_config_map("default", watch=True, resource_version=start,
                                           label_selector="mesh=on", _preload_content=False)
    fake_kube.wait_for_watches("configmaps")
    fake_kube.drop_watches()  # after the replayed events
    types = [json.loads(line)["type"] for line in resp.read().splitlines()]
    assert types == ["ADDED", "DELETED", "ADDED"]


def test_drop_watches_ends_streams_cleanly_or_abruptly(fake_kube: FakeApiServer,
                                                       kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client)
    clean = core.list_namespaced_config_map("default", watch=True, _preload_content=False)
    fake_kube.wait_for_watches("configmaps")
    assert fake_kube.drop_watches() == 1
    assert clean.read() == b""  # the chunked stream ended properly

    cut = core.list_namespaced_config_map("default", watch=True, _preload_content=False)
    fake_kube.wait_for_watches("configmaps")
    fake_kube.drop_watches(abrupt=True)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        cut.read()
    assert fake_kube.open_watches() == 0


# EndpointSlices, Leases ------------------------------------------------------------


def test_endpoint_slices(kube_client: Any) -> None:
    disc = client.DiscoveryV1Api(kube_client)
    disc.create_namespaced_endpoint_slice("default", {
        "metadata": {"name": "reviews-abc", "labels": {
            "kubernetes.io/service-name": "reviews"}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": 50061}],
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True},
                       "zone": "zone-a"}]})
    (found,) = disc.list_endpoint_slice_for_all_namespaces(
        label_selector="kubernetes.io/service-name=reviews").items
    assert found.ports[0].protocol == "TCP" and found.endpoints[0].zone == "zone-a"
    with pytest.raises(ApiException) as invalid:
        disc.create_namespaced_endpoint_slice("default", {
            "metadata": {"name": "bad"}, "addressType": "IPv5", "endpoints": []})
    assert invalid.value.status == 422


def test_lease_updates_are_optimistic(kube_client: Any) -> None:
    coord = client.CoordinationV1Api(kube_client)
    lease = coord.create_namespaced_lease("kube-system", {
        "metadata": {"name": "meshlib-control-plane"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})
    stale = lease.metadata.resource_version
    lease.spec.holder_identity = "b"
    renewed = coord.replace_namespaced_lease("meshlib-control-plane", "kube-system", lease)
    assert renewed.spec.holder_identity == "b"
    assert renewed.metadata.resource_version != stale

    lease.spec.holder_identity = "c"
    lease.metadata.resource_version = stale
    with pytest.raises(ApiException) as conflict:
        coord.replace_namespaced_lease("meshlib-control-plane", "kube-system", lease)
    assert conflict.value.status == 409
    status = _status(conflict.value)
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Operation cannot be fulfilled on leases.coordination.k8s.io "meshlib-control-plane": '
        "the object has been modified; please apply your changes to the latest version and "
        "try again")
    same = coord.read_namespaced_lease("meshlib-control-plane", "kube-system")
    assert same.spec.holder_identity == "b"
    # A write that changes nothing keeps the resourceVersion (no event either).
    again = coord.replace_namespaced_lease("meshlib-control-plane", "kube-system", same)
    assert again.metadata.resource_version == same.metadata.resource_version


# Tokens ----------------------------------------------------------------------------


def _review(kube_client: Any, token: str, audiences: list[str]) -> Any:
    return client.AuthenticationV1Api(kube_client).create_token_review(
        {"spec": {"token": token, "audiences": audiences}}).status


def test_token_review_judges_tokens_as_the_real_one(fake_kube: FakeApiServer,
                                                    kube_client: Any) -> None:
    good = _review(kube_client, fake_kube.token("default", "reviews"), ["meshlib"])
    assert good.authenticated is True
    assert good.user.username == "system:serviceaccount:default:reviews"
    assert good.audiences == ["meshlib"]
    assert "system:serviceaccounts:default" in good.user.groups
    sa = client.CoreV1Api(kube_client).read_namespaced_service_account("reviews", "default")
    assert good.user.uid == sa.metadata.uid

    wrong_aud = _review(kube_client, fake_kube.token("default", "reviews", audience="other"),
                        ["meshlib"])
    assert not wrong_aud.authenticated
    assert 'token audiences ["other"] is invalid for the target audiences ["meshlib"]' \
        in wrong_aud.error
    expired = _review(kube_client, fake_kube.expired_token("default", "reviews"), ["meshlib"])
    assert not expired.authenticated and "service account token has expired" in expired.error
    forged = _review(kube_client, fake_kube.forged_token("default", "reviews"), ["meshlib"])
    assert not forged.authenticated and forged.error

    orphan = fake_kube.token("default", "gone")
    client.CoreV1Api(kube_client).delete_namespaced_service_account("gone", "default")
    deleted = _review(kube_client, orphan, ["meshlib"])
    assert not deleted.authenticated and 'serviceaccounts "gone" not found' in deleted.error


def test_token_request_subresource_mints_reviewable_tokens(fake_kube: FakeApiServer,
                                                           kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_service_account("default", {"metadata": {"name": "frontend"}})
    req = core.create_namespaced_service_account_token("frontend", "default", {
        "spec": {"audiences": ["meshlib"], "expirationSeconds": 600}})
    assert req.status.expiration_timestamp is not None
    review = fake_kube.review(req.status.token, ["meshlib"])
    assert review["user"]["username"] == "system:serviceaccount:default:frontend"
    with pytest.raises(ApiException) as short:
        core.create_namespaced_service_account_token("frontend", "default", {
            "spec": {"audiences": ["meshlib"], "expirationSeconds": 60}})
    assert short.value.status == 422


# Custom resources: Gateway API routes, meshlib.dev CRDs -------------------------------


def test_grpcroute_status_subresource(kube_client: Any) -> None:
    custom = client.CustomObjectsApi(kube_client)
    args = ("gateway.networking.k8s.io", "v1", "default", "grpcroutes")
    made = custom.create_namespaced_custom_object(*args, _grpcroute("reviews"))
    assert made["metadata"]["generation"] == 1
    backend = made["spec"]["rules"][0]["backendRefs"][0]
    assert (backend["group"], backend["kind"], backend["weight"]) == ("", "Service", 1)

    status = {"parents": [{
        "parentRef": {"group": "", "kind": "Service", "name": "reviews"},
        "controllerName": "meshlib.dev/control-plane",
        "conditions": [{"type": "ResolvedRefs", "status": "False",
                        "reason": "BackendNotFound", "message": "no Service reviews-v1",
                        "observedGeneration": 1,
                        "lastTransitionTime": "2025-01-01T00:00:00Z"}]}]}
    written = custom.patch_namespaced_custom_object_status(*args, "reviews",
                                                           {"status": status,
                                                            "spec": {"rules": []}})
    assert written["status"] == status
    assert written["spec"] == made["spec"]  # /status changes status only
    assert written["metadata"]["generation"] == 1

    spec_change = custom.patch_namespaced_custom_object(
        *args, "reviews", {"spec": {"rules": [{"backendRefs": [{"name": "reviews-v2",
                                                                "port": 50051}]}]},
                           "status": {"parents": []}})
    assert spec_change["status"] == status  # the main endpoint ignores status
    assert spec_change["metadata"]["generation"] == 2

    with pytest.raises(ApiException) as smp:  # no strategic merge patch for CRDs
        custom.patch_namespaced_custom_object(
            *args, "reviews", {"spec": {}},
            _content_type="application/strategic-merge-patch+json")
    assert smp.value.status == 415


def test_crds_register_their_resources(kube_client: Any) -> None:
    ext = client.ApiextensionsV1Api(kube_client)
    crd = yaml.safe_load((CRDS / "meshlib.dev_trafficpolicies.yaml").read_text())
    made = ext.create_custom_resource_definition(crd)
    assert {c.type for c in made.status.conditions} == {"NamesAccepted", "Established"}
    resources = client.CustomObjectsApi(kube_client).get_api_resources("meshlib.dev", "v1alpha1")
    assert [(r.name, r.short_names) for r in resources.resources] == [
        ("trafficpolicies", ["tp"]), ("trafficpolicies/status", None)]

    custom = client.CustomObjectsApi(kube_client)
    args = ("meshlib.dev", "v1alpha1", "default", "trafficpolicies")
    policy = {"apiVersion": "meshlib.dev/v1alpha1", "kind": "TrafficPolicy",
              "metadata": {"name": "reviews"},
              "spec": {"targetRef": {"kind": "Service", "name": "reviews"}, "timeout": "2s",
                       "unknownField": 1}}
    made_tp = custom.create_namespaced_custom_object(*args, policy)
    assert "unknownField" not in made_tp["spec"]  # pruned, as a structural schema does
    status = {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                              "message": "ok", "lastTransitionTime": "2025-01-01T00:00:00Z",
                              "observedGeneration": 1}]}
    custom.patch_namespaced_custom_object_status(*args, "reviews", {"status": status})
    assert custom.get_namespaced_custom_object(*args, "reviews")["status"] == status

    with pytest.raises(ApiException) as invalid:
        custom.create_namespaced_custom_object(*args, {
            "apiVersion": "meshlib.dev/v1alpha1", "kind": "TrafficPolicy",
            "metadata": {"name": "bad"}, "spec": {"loadBalancer": {"type": "RANDOM"}}})
    assert invalid.value.status == 422
    message = _status(invalid.value)["message"]
    assert message.startswith('TrafficPolicy.meshlib.dev "bad" is invalid: ')
    assert "spec.targetRef: Required value" in message
    assert 'spec.loadBalancer.type: Unsupported value: "RANDOM"' in message

    ext.delete_custom_resource_definition(crd["metadata"]["name"])
    with pytest.raises(ApiException) as gone:
        custom.list_namespaced_custom_object(*args)
    assert gone.value.status == 404


# Test hooks ------------------------------------------------------------------------


def test_faults_counts_and_pause(fake_kube: FakeApiServer, kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client)
    with fake_kube.fault(503, verbs={"list"}, resources={"services"}, times=1):
        with pytest.raises(ApiException) as failed:
            core.list_namespaced_service("default")
        assert failed.value.status == 503
        core.list_namespaced_service("default")  # `times` spent
    core.list_namespaced_config_map("default")
    assert fake_kube.count("list", "services") == 2
    assert fake_kube.count("list") == 3
    assert fake_kube.requests[0].code == 503

    fake_kube.pause(500)
    with pytest.raises(ApiException) as down:
        core.read_namespace("default")
    assert down.value.status == 500
    fake_kube.resume()
    assert core.read_namespace("default").status.phase == "Active"


def test_bearer_token_authentication() -> None:
    with FakeApiServer(bearer_token="s3cret") as kube:
        anonymous = client.ApiClient(client.Configuration(host=kube.url))
        with pytest.raises(ApiException) as unauthorized:
            client.CoreV1Api(anonymous).list_namespace()
        assert unauthorized.value.status == 401
        with kube.api_client() as authed:
            assert client.CoreV1Api(authed).list_namespace().items
        with kube.api_client(token=kube.token("default", "cp", audience=kube.tokens.issuer)) \
                as sa_client:
            assert client.CoreV1Api(sa_client).list_namespace().items
        anonymous.close()


def test_python_side_helpers(fake_kube: FakeApiServer) -> None:
    loaded = fake_kube.load(CRDS, ROOT / "examples" / "mesh")
    kinds = {o["kind"] for o in loaded}
    assert {"CustomResourceDefinition", "Service", "EndpointSlice", "GRPCRoute",
            "TrafficPolicy", "AccessPolicy", "MeshConfig"} <= kinds
    assert fake_kube.get("meshlib.dev/v1alpha1", "MeshConfig", "mesh", None) is not None
    slices = fake_kube.list("discovery.k8s.io/v1", "EndpointSlice")
    assert len(slices) >= 3 and slices[0]["kind"] == "EndpointSlice"
    assert fake_kube.delete("v1", "Service", "reviews")
    assert not fake_kube.delete("v1", "Service", "reviews")


def test_custom_objects_watch_across_namespaces(fake_kube: FakeApiServer,
                                                kube_client: Any) -> None:
    custom = client.CustomObjectsApi(kube_client)
    listed = custom.list_cluster_custom_object("gateway.networking.k8s.io", "v1", "grpcroutes")
    assert listed["kind"] == "GRPCRouteList" and listed["items"] == []
    custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", "default",
                                           "grpcroutes", _grpcroute("r"))
    custom.patch_namespaced_custom_object_status(
        "gateway.networking.k8s.io", "v1", "default", "grpcroutes", "r",
        {"status": {"parents": []}})
    seen = []
    w = watch.Watch()
    for event in w.stream(custom.list_cluster_custom_object, "gateway.networking.k8s.io",
                          "v1", "grpcroutes",
                          resource_version=listed["metadata"]["resourceVersion"],
                          timeout_seconds=5):
        seen.append((event["type"], event["object"]["kind"],
                     event["object"]["metadata"]["resourceVersion"]))
        if len(seen) == 2:
            w.stop()
    assert [s[:2] for s in seen] == [("ADDED", "GRPCRoute"), ("MODIFIED", "GRPCRoute")]
    assert w.resource_version == seen[1][2]


def test_periodic_bookmarks() -> None:
    with FakeApiServer(bookmark_interval=0.1) as kube, kube.api_client() as api:
        core = client.CoreV1Api(api)
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_config_map, "default", resource_version="0",
                              allow_watch_bookmarks=True, timeout_seconds=5):
            assert event["type"] == "BOOKMARK"  # nothing else happens
            w.stop()
        assert w.resource_version == str(kube.resource_version)
