"""Every problem is found, named by file, object and field, and reported in reading order;
equal inputs give equal models."""

from __future__ import annotations

import random

from tests.xds_server.sources.source_builders import (
    ROOT,
    endpoint_slice,
    lines,
    parse,
    policy,
    route,
    service,
)
from xds_server.sources import parse_objects, read_documents


def test_every_problem_is_reported_not_only_the_first() -> None:
    bad_route = route(
        rules=[
            {
                "backendRefs": [
                    {"name": "reviews", "port": 50051, "weight": -1},
                    {"name": "reviews", "port": 50051, "weight": "ten"},
                ]
            },
            {"backendRefs": [{"name": "gone", "port": 50051}]},
        ]
    )
    bad_policy = policy("TrafficPolicy", timeout="soon", retries={"attempts": 99})
    _, problems = parse(service(), bad_route, bad_policy)
    assert lines(problems) == [
        "mesh.yaml: GRPCRoute default/reviews: spec.rules[0].backendRefs[0].weight: must be an "
        "integer between 0 and 1000000, got -1",
        "mesh.yaml: GRPCRoute default/reviews: spec.rules[0].backendRefs[1].weight: must be an "
        'integer between 0 and 1000000, got string "ten"',
        "mesh.yaml: GRPCRoute default/reviews: spec.rules[1].backendRefs[0].name: backend "
        "Service default/gone not found",
        'mesh.yaml: TrafficPolicy default/reviews: spec.timeout: must be a duration like "1s", '
        '"500ms" or "1m30s", got string "soon"',
        "mesh.yaml: TrafficPolicy default/reviews: spec.retries.attempts: must be an integer "
        "between 1 and 10, got 99",
    ]


def test_problem_parts_are_separate_fields() -> None:
    _, problems = parse(
        service(),
        route(rules=[{"backendRefs": [{"name": "x", "port": 1}]}]),
        source="mesh/routes.yaml",
    )
    (problem,) = problems
    assert problem.source == "mesh/routes.yaml"
    assert problem.obj == "GRPCRoute default/reviews"
    assert problem.field == "spec.rules[0].backendRefs[0].name"
    assert problem.message == "backend Service default/x not found"


def test_problems_follow_the_document_not_the_parser() -> None:
    # Unknown fields are found when a mapping is first seen and references at the end;
    # the report still reads top to bottom.
    obj = route(
        hostnames=["Bad Host"],
        rules=[
            {"backendRefs": [{"name": "gone", "port": 50051}]},
            {"backendRefs": [{"name": "reviews", "port": 50051, "wieght": 1}]},
            {"backendRefs": [{"name": "reviews", "port": 50051, "weight": -5}]},
        ],
    )
    _, problems = parse(service(), obj)
    assert [p.field for p in problems] == [
        "spec.hostnames[0]",
        "spec.rules[0].backendRefs[0].name",
        "spec.rules[1].backendRefs[0].wieght",
        "spec.rules[2].backendRefs[0].weight",
    ]


def test_problems_are_grouped_by_source_then_object() -> None:
    objects = [
        ("b.yaml", route("GRPCRoute", "r1", rules=[{"backendRefs": [{"name": "x", "port": 1}]}])),
        ("a.yaml", service(ports=[{"name": "grpc", "port": 0}])),
        ("b.yaml", service("other", ports=[{"name": "grpc", "port": 0}])),
    ]
    _, problems = parse_objects(objects)
    assert [(p.source, p.obj) for p in problems] == [
        ("b.yaml", "GRPCRoute default/r1"),
        ("b.yaml", "Service default/other"),
        ("a.yaml", "Service default/reviews"),
    ]


def test_duplicates_keep_the_first() -> None:
    first = service(ports=[{"name": "grpc", "port": 1}])
    second = service(ports=[{"name": "grpc", "port": 2}])
    model, problems = parse_objects([("a.yaml", first), ("b.yaml", second), ("b.yaml", second)])
    assert lines(problems) == [
        "b.yaml: Service default/reviews: duplicate object: also defined in a.yaml; this one "
        "is ignored",
        "b.yaml: Service default/reviews: duplicate object: also defined in a.yaml; this one "
        "is ignored",
    ]
    assert model.services[0].ports[0].port == 1
    _, problems = parse(first, first)
    assert lines(problems) == [
        "mesh.yaml: Service default/reviews: duplicate object: also defined earlier in this "
        "file; this one is ignored"
    ]


def test_same_name_in_another_namespace_or_kind_is_no_duplicate() -> None:
    _, problems = parse(
        service(),
        service(namespace="shop"),
        endpoint_slice("reviews"),
        policy("AccessPolicy"),
        policy("TrafficPolicy"),
    )
    assert lines(problems) == []


def test_a_reference_to_an_invalid_service_is_not_reported_twice() -> None:
    _, problems = parse(service(ports=[{"name": "grpc", "port": 0}]), route())
    assert [p.obj for p in problems] == ["Service default/reviews"]


def test_input_is_not_modified() -> None:
    obj = route()
    snapshot = repr(obj)
    parse_objects([("mesh.yaml", obj)])
    assert repr(obj) == snapshot


def test_equal_inputs_in_any_order_give_equal_models() -> None:
    documents, problems = read_documents(ROOT / "examples" / "mesh")
    assert problems == []
    reference, _ = parse_objects(documents)
    rng = random.Random(7)
    for _ in range(5):
        shuffled = documents[:]
        rng.shuffle(shuffled)
        model, problems = parse_objects(shuffled)
        assert problems == []
        assert model == reference
        assert repr(model) == repr(reference)
    names = [(s.namespace, s.name) for s in reference.services]
    assert names == sorted(names)
    slices = [(s.namespace, s.name) for s in reference.endpoint_slices]
    assert slices == sorted(slices)


def test_models_are_hashable_values() -> None:
    documents, _ = read_documents(ROOT / "examples" / "mesh")
    first, _ = parse_objects(documents)
    second, _ = parse_objects(documents)
    assert first == second
    assert hash(first.services) == hash(second.services)
    assert hash(first.routes) == hash(second.routes)
