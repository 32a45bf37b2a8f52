"""Finer points of the fake API server that clients lean on: the patch flavours and
their directives, namespaces and finalizers, watch-list, printing, restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.kube import FakeApiServer
from tests.kube._patch import PatchError, json_merge_patch, json_patch
from tests.kube.kubectl import Kubectl

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "deploy" / "crds"
EXAMPLES = ROOT / "examples" / "mesh"


def _pod(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "spec": {"containers": [
                {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"},
                                                          {"name": "B", "value": "2"}]},
                {"name": "sidecar", "image": "envoy:1"}]}}


def test_strategic_merge_patch_directives(kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_pod("default", _pod("p"))

    def patch(body: dict[str, Any]) -> Any:
        return core.patch_namespaced_pod("p", "default", body)

    # Containers merge by name, env by name; `$patch: delete` removes one item.
    pod = patch({"spec": {"containers": [
        {"name": "app", "image": "app:2", "env": [{"name": "B", "$patch": "delete"},
                                                  {"name": "C", "value": "3"}]}]}})
    app, sidecar = pod.spec.containers
    assert (app.image, sidecar.image) == ("app:2", "envoy:1")
    assert [(e.name, e.value) for e in app.env] == [("A", "1"), ("C", "3")]
    # `$setElementOrder` reorders what the patch leaves.
    pod = patch({"spec": {"$setElementOrder/containers": [{"name": "sidecar"},
                                                          {"name": "app"}]}})
    assert [c.name for c in pod.spec.containers] == ["sidecar", "app"]
    # Finalizers merge as a set; `$deleteFromPrimitiveList` takes one out.
    patch({"metadata": {"finalizers": ["a.example/x", "a.example/y"]}})
    pod = patch({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example/x"]}})
    assert pod.metadata.finalizers == ["a.example/y"]
    # `$patch: replace` on a map replaces it; null deletes a key.
    pod = patch({"metadata": {"labels": {"a": "1", "b": "2"}}})
    pod = patch({"metadata": {"labels": {"$patch": "replace", "c": "3"}}})
    assert pod.metadata.labels == {"c": "3"}
    pod = patch({"metadata": {"labels": {"c": None}}})
    assert not pod.metadata.labels
    # `$retainKeys` keeps only the listed fields of a map (kubectl sends it for
    # retainKeys strategies such as a volume's source).
    pod = patch({"spec": {"securityContext": {"runAsUser": 1, "runAsGroup": 2}}})
    pod = patch({"spec": {"securityContext": {"$retainKeys": ["runAsUser"], "runAsUser": 5}}})
    assert (pod.spec.security_context.run_as_user, pod.spec.security_context.run_as_group) \
        == (5, None)


def test_json_merge_and_json_patch_rules() -> None:
    assert json_merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None}, "l": [2]}) \
        == {"a": {"c": 2}, "l": [2]}
    doc = {"a": [1, 2], "b": {"c": 1}}
    assert json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3},
                            {"op": "move", "from": "/b/c", "path": "/d"},
                            {"op": "test", "path": "/d", "value": 1},
                            {"op": "replace", "path": "/a/0", "value": 0}]) == {
        "a": [0, 2, 3], "b": {}, "d": 1}
    assert doc == {"a": [1, 2], "b": {"c": 1}}  # untouched
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "test", "path": "/a/0", "value": 9}])
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "remove", "path": "/nope"}])


def test_failed_json_patch_and_stale_patch_are_refused(kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client)
    cm = core.create_namespaced_config_map("default", {"metadata": {"name": "c"},
                                                       "data": {"k": "v"}})
    with pytest.raises(ApiException) as failed:
        core.patch_namespaced_config_map("c", "default", [
            {"op": "test", "path": "/data/k", "value": "other"}])
    assert failed.value.status == 422
    core.patch_namespaced_config_map("c", "default", {"data": {"k": "v2"}})
    with pytest.raises(ApiException) as stale:  # a resourceVersion in a patch is a precondition
        core.patch_namespaced_config_map("c", "default", {"metadata": {
            "resourceVersion": cm.metadata.resource_version}, "data": {"k": "v3"}})
    assert stale.value.status == 409


def test_namespace_deletion_takes_its_objects_and_finalizers_hold_deletion(
        fake_kube: FakeApiServer, kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client)
    core.create_namespace({"metadata": {"name": "app"}})
    core.create_namespaced_config_map("app", {"metadata": {"name": "a"}})
    core.create_namespaced_config_map("app", {"metadata": {
        "name": "held", "finalizers": ["example.com/hold"]}})
    marked = core.delete_namespaced_config_map("held", "app")  # "object": a dict
    assert marked["metadata"]["deletionTimestamp"]  # still there, marked
    assert core.read_namespaced_config_map("held", "app").metadata.deletion_timestamp
    core.patch_namespaced_config_map("held", "app", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map("held", "app")
    assert gone.value.status == 404

    start = fake_kube.resource_version
    core.delete_namespace("app")
    assert core.list_namespaced_config_map("app").items == []
    resp = core.list_config_map_for_all_namespaces(watch=True, resource_version=str(start),
                                                   _preload_content=False)
    fake_kube.wait_for_watches("configmaps")
    fake_kube.drop_watches()
    assert [json.loads(line)["type"] for line in resp.read().splitlines()] == ["DELETED"]


def test_watch_list_sends_initial_events_then_a_marked_bookmark(fake_kube: FakeApiServer,
                                                                kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client)
    for name in ("a", "b"):
        core.create_namespaced_config_map("default", {"metadata": {"name": name}})
    resp = core.list_namespaced_config_map(
        "default", watch=True, send_initial_events=True, resource_version_match="NotOlderThan",
        allow_watch_bookmarks=True, _preload_content=False)
    fake_kube.wait_for_watches("configmaps")
    fake_kube.drop_watches()
    events = [json.loads(line) for line in resp.read().splitlines()]
    assert [e["type"] for e in events] == ["ADDED", "ADDED", "BOOKMARK"]
    assert events[2]["object"]["metadata"]["annotations"] == {
        "k8s.io/initial-events-end": "true"}


def test_a_restarted_server_keeps_its_objects(fake_kube: FakeApiServer,
                                              kube_client: Any) -> None:
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_config_map("default", {"metadata": {"name": "kept"}})
    rv = fake_kube.resource_version
    fake_kube.stop()
    with pytest.raises(Exception):  # noqa: B017 (urllib3 raises one of several errors)
        core.read_namespaced_config_map("kept", "default", _request_timeout=1)
    fake_kube.start()
    assert core.read_namespaced_config_map("kept", "default").metadata.resource_version \
        == str(rv)


def test_kubectl_get_prints_the_crd_printer_columns(fake_kube: FakeApiServer,
                                                    kubectl: Kubectl) -> None:
    fake_kube.load(CRDS, EXAMPLES / "policies.yaml", EXAMPLES / "services.yaml")
    header, first, _ = kubectl("get", "trafficpolicies").stdout.splitlines()
    assert header.split() == ["NAME", "TARGET", "LOAD", "BALANCER", "TIMEOUT", "AGE"]
    assert first.split()[:4] == ["reviews", "reviews", "ROUND_ROBIN", "2s"]
    wide = kubectl("get", "trafficpolicies", "-o", "wide").stdout.splitlines()[0]
    assert "RETRIES" in wide  # a priority-1 column
    services = kubectl("get", "services").stdout.splitlines()
    assert services[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
