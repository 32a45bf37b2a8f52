"""Route and policy status, the Gateway API way: pure, objects and problems in."""

from __future__ import annotations

from meshlib.contract import Problem
from meshlib.testing import config as c
from xds_server.sources.parse import parse_objects
from xds_server.status import CONTROLLER_NAME, policy_status, route_status, status_of

T0, T1 = "2026-12-04T20:00:00Z", "2026-12-04T21:00:00Z"


def _problems(*objects):
    _, problems = parse_objects([("kubernetes", o) for o in c.flatten(objects)])
    return problems


def _conditions(entry):
    return {cond["type"]: (cond["status"], cond["reason"]) for cond in entry["conditions"]}


def test_an_attached_route_with_its_backends_is_accepted_and_resolved():
    route = c.split("reviews", {"reviews-v1": 90, "reviews-v2": 10})
    route["metadata"]["generation"] = 3
    problems = _problems(c.service("reviews"), c.service("reviews-v1"),
                         c.service("reviews-v2"), route)
    status = route_status(route, [p for p in problems if p.obj == "GRPCRoute default/reviews"],
                          T0)
    [entry] = status["parents"]
    assert entry["controllerName"] == CONTROLLER_NAME
    assert entry["parentRef"] == {"group": "", "kind": "Service", "name": "reviews",
                                  "port": 50051}
    assert _conditions(entry) == {"Accepted": ("True", "Accepted"),
                                  "ResolvedRefs": ("True", "ResolvedRefs")}
    assert {cond["observedGeneration"] for cond in entry["conditions"]} == {3}


def test_a_missing_backend_is_backend_not_found_and_a_missing_parent_no_matching_parent():
    route = c.split("reviews", {"reviews-v1": 90, "ghost": 10})
    orphan = c.grpc_route("nobody", c.rule("reviews-v1"))
    problems = _problems(c.service("reviews"), c.service("reviews-v1"), route, orphan)
    mine = [p for p in problems if p.obj == "GRPCRoute default/reviews"]
    [entry] = route_status(route, mine, T0)["parents"]
    assert _conditions(entry) == {"Accepted": ("True", "Accepted"),
                                  "ResolvedRefs": ("False", "BackendNotFound")}
    resolved = next(x for x in entry["conditions"] if x["type"] == "ResolvedRefs")
    assert resolved["message"] == ("spec.rules[0].backendRefs[1].name: backend Service "
                                   "default/ghost not found")
    theirs = [p for p in problems if p.obj == "GRPCRoute default/nobody"]
    [entry] = route_status(orphan, theirs, T0)["parents"]
    assert _conditions(entry)["Accepted"] == ("False", "NoMatchingParent")


def test_other_controllers_entries_are_kept_and_unchanged_times_do_not_move():
    route = c.split("reviews", {"reviews-v1": 100})
    other = {"parentRef": {"kind": "Gateway", "name": "edge"}, "controllerName": "x.io/gw",
             "conditions": []}
    route["status"] = {"parents": [other]}
    first = route_status(route, [], T0)
    assert first["parents"][0] == other
    route["status"] = first
    again = route_status(route, [], T1)
    assert again == first  # nothing changed: nothing to write
    broken = route_status(route, [Problem(message="backend Service default/x not found",
                                          obj="GRPCRoute default/reviews",
                                          field="spec.rules[0].backendRefs[0].name")], T1)
    times = {x["type"]: x["lastTransitionTime"] for x in broken["parents"][1]["conditions"]}
    assert times == {"Accepted": T0, "ResolvedRefs": T1}  # only the one that changed


def test_a_policy_is_accepted_or_invalid_with_the_check_lines():
    policy = c.traffic_policy("reviews", timeout="bad")
    problems = _problems(c.service("reviews"), policy)
    status = policy_status(policy, problems, T0)
    [accepted] = status["conditions"]
    assert (accepted["status"], accepted["reason"]) == ("False", "Invalid")
    assert accepted["message"].startswith('spec.timeout: must be a duration like "1s"')
    good = c.traffic_policy("reviews", timeout="1s")
    assert policy_status(good, [], T0)["conditions"][0]["status"] == "True"


def test_kinds_without_status_get_none():
    assert status_of(c.service("reviews"), [], T0) is None
    assert status_of(c.mesh_config(), [], T0)["conditions"][0]["reason"] == "Accepted"


def test_a_parent_ref_index_is_not_mistaken_for_a_longer_one():
    route = c.split("reviews", {"reviews-v1": 100})
    route["spec"]["parentRefs"] = [{"kind": "Service", "name": f"s{i}"} for i in range(11)]
    problem = Problem(message="parent Service default/s10 not found", obj="GRPCRoute default/reviews",
                      field="spec.parentRefs[10].name")
    entries = route_status(route, [problem], T0)["parents"]
    assert _conditions(entries[1])["Accepted"] == ("True", "Accepted")
    assert _conditions(entries[10])["Accepted"] == ("False", "NoMatchingParent")
