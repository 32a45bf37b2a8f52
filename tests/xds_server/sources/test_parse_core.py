"""Service, EndpointSlice, metadata and kind handling."""

from __future__ import annotations

import pytest

from tests.xds_server.sources.source_builders import endpoint_slice, lines, parse, parse_ok, service
from xds_server.model import Endpoint, EndpointPort, ServicePort
from xds_server.sources import derive_protocol

# ------------------------------------------------------------------------- Service


@pytest.mark.parametrize(
    ("name", "app_protocol", "expected"),
    [
        ("", "grpc", "grpc"),
        ("", "http", "http"),
        ("", "http2", "http2"),
        ("", "tcp", "tcp"),
        ("", "kubernetes.io/h2c", "http2"),
        ("", "kubernetes.io/ws", "http"),
        ("", "GRPC", "grpc"),  # appProtocol is compared case-insensitively
        ("http", "grpc", "grpc"),  # appProtocol wins over the name
        ("grpc", "mysql", "grpc"),  # an unknown appProtocol falls back to the name
        ("grpc", "", "grpc"),
        ("grpc-api", "", "grpc"),
        ("grpc-web", "", "grpc"),
        ("grpc-web-ui", "", "grpc"),
        ("http", "", "http"),
        ("http-metrics", "", "http"),
        ("http2", "", "http2"),
        ("http2-api", "", "http2"),
        ("tcp-db", "", "tcp"),
        ("https", "", "tcp"),  # "http" must be followed by "-" or the end
        ("grpcx", "", "tcp"),
        ("web", "", "tcp"),
        ("", "", "tcp"),
    ],
)
def test_protocol_derivation(name: str, app_protocol: str, expected: str) -> None:
    assert derive_protocol(name, app_protocol) == expected


def test_service_ports_labels_and_service_account() -> None:
    svc = service(
        ports=[
            {"name": "grpc", "port": 50051, "targetPort": "grpc", "appProtocol": "grpc"},
            {"name": "http-admin", "port": 8080, "targetPort": 9090, "protocol": "TCP"},
            {"name": "metrics", "port": 9100},
        ]
    )
    svc["metadata"]["labels"] = {"version": "v1", "app": "reviews"}
    svc["metadata"]["annotations"] = {"meshlib.dev/service-account": "reviews-sa"}
    (parsed,) = parse_ok(svc).services
    assert parsed.ports == (
        ServicePort(
            name="grpc", port=50051, target_port="grpc", protocol="grpc", app_protocol="grpc"
        ),
        ServicePort(name="http-admin", port=8080, target_port=9090, protocol="http"),
        ServicePort(name="metrics", port=9100, target_port=9100, protocol="tcp"),
    )
    assert parsed.labels == (("app", "reviews"), ("version", "v1"))  # sorted
    assert parsed.service_account == "reviews-sa"
    assert parsed.ref is not None and parsed.ref.source == "mesh.yaml"


@pytest.mark.parametrize(("annotation", "value"), [
    ("meshlib.dev/service-account", "api.payments"),
    ("meshlib.dev/service-account", "Cart"),
    ("meshlib.dev/service-accounts", "cart,api.payments"),
])
def test_service_account_annotations_are_dns_labels(annotation: str, value: str) -> None:
    svc = service()
    svc["metadata"]["annotations"] = {annotation: value}
    (line,) = lines(parse(svc)[1])
    assert f"metadata.annotations[{annotation}]: must be" in line
    assert "(a DNS label: " in line or "(DNS labels: " in line


def test_every_real_service_spec_field_is_accepted() -> None:
    svc = service(
        selector={"app": "reviews"},
        type="LoadBalancer",
        clusterIP="10.96.0.10",
        clusterIPs=["10.96.0.10"],
        ipFamilies=["IPv4"],
        ipFamilyPolicy="SingleStack",
        sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 10800}},
        externalTrafficPolicy="Local",
        internalTrafficPolicy="Cluster",
        publishNotReadyAddresses=False,
        externalName="",
        loadBalancerIP="1.2.3.4",
        loadBalancerSourceRanges=["10.0.0.0/8"],
        healthCheckNodePort=30000,
        allocateLoadBalancerNodePorts=True,
        loadBalancerClass="example.com/lb",
        trafficDistribution="PreferClose",
        externalIPs=["1.2.3.5"],
    )
    svc["spec"]["ports"][0].update(nodePort=30001, protocol="TCP")
    svc["metadata"].update(
        uid="1234",
        resourceVersion="42",
        generation=1,
        creationTimestamp="2024-01-01T00:00:00Z",
        ownerReferences=[],
        managedFields=[],
        finalizers=[],
        annotations={"a": "b"},
    )
    svc["status"] = {"loadBalancer": {}}
    parse_ok(svc)


def test_headless_service_without_ports() -> None:
    svc = service()
    del svc["spec"]["ports"]
    svc["spec"]["clusterIP"] = "None"
    (parsed,) = parse_ok(svc).services
    assert parsed.ports == ()


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        (
            [{"name": "grpc", "port": 1}, {"port": 2}],
            "spec.ports[1].name: is required when a Service has more than one port",
        ),
        (
            [{"name": "grpc", "port": 1}, {"name": "grpc", "port": 2}],
            'spec.ports[1].name: duplicate port name "grpc"',
        ),
        (
            [{"name": "a", "port": 1}, {"name": "b", "port": 1}],
            "spec.ports[1].port: duplicate port 1/TCP",
        ),
        ([{"name": "grpc"}], "spec.ports[0].port: is required"),
        (
            [{"name": "grpc", "port": 70000}],
            "spec.ports[0].port: must be an integer between 1 and 65535, got 70000",
        ),
        (
            [{"name": "grpc", "port": "50051"}],
            'spec.ports[0].port: must be an integer between 1 and 65535, got string "50051"',
        ),
        (
            [{"name": "grpc", "port": 1, "protocol": "tcp"}],
            'spec.ports[0].protocol: must be one of TCP, UDP, SCTP; got "tcp" '
            '(did you mean "TCP"?)',
        ),
        (
            [{"name": "grpc", "port": 1, "targetPort": "Not_A_Name"}],
            "spec.ports[0].targetPort: must be a port number or a container port name, "
            'got "Not_A_Name"',
        ),
        (
            [{"name": "grpc", "port": 1, "prot": "TCP"}],
            'spec.ports[0].prot: unknown field (did you mean "port"?)',
        ),
    ],
)
def test_service_port_problems(ports: list[dict], expected: str) -> None:
    _, problems = parse(service(ports=ports))
    assert lines(problems) == [f"mesh.yaml: Service default/reviews: {expected}"]


def test_unknown_service_spec_field_is_reported_and_the_service_kept() -> None:
    model, problems = parse(service(sessionAfinity="None"))
    assert lines(problems) == [
        "mesh.yaml: Service default/reviews: spec.sessionAfinity: unknown field "
        '(did you mean "sessionAffinity"?)'
    ]
    assert len(model.services) == 1  # unknown fields are ignored, as the API server prunes


def test_invalid_value_leaves_the_service_out_of_the_model() -> None:
    model, problems = parse(service(ports=[{"name": "grpc", "port": -1}]))
    assert len(problems) == 1
    assert model.services == ()


def test_service_name_must_be_a_dns_label() -> None:
    svc = service("Reviews")
    _, problems = parse(svc)
    assert lines(problems) == [
        "mesh.yaml: Service default/Reviews: metadata.name: must be a DNS label (lower-case "
        "letters, digits and '-', starting with a letter), got \"Reviews\""
    ]


# ------------------------------------------------------------------- EndpointSlice


@pytest.mark.parametrize(
    ("conditions", "ready", "serving", "terminating"),
    [
        (None, True, True, False),  # no conditions at all: ready
        ({}, True, True, False),
        ({"ready": None}, True, True, False),  # null means unknown: treat as ready
        ({"ready": True}, True, True, False),
        ({"ready": False}, False, False, False),  # serving absent: same as ready
        ({"ready": False, "serving": True, "terminating": True}, False, True, True),
        ({"ready": False, "serving": False, "terminating": True}, False, False, True),
        ({"serving": False}, True, False, False),
        ({"terminating": True}, True, True, True),
    ],
)
def test_endpoint_conditions_follow_kubernetes(
    conditions: dict | None, ready: bool, serving: bool, terminating: bool
) -> None:
    endpoint: dict = {"addresses": ["10.0.0.1"]}
    if conditions is not None:
        endpoint["conditions"] = conditions
    model = parse_ok(service(), endpoint_slice(endpoints=[endpoint]))
    (parsed,) = model.endpoint_slices[0].endpoints
    assert (parsed.ready, parsed.serving, parsed.terminating) == (ready, serving, terminating)


def test_endpoint_slice_fields() -> None:
    eps = endpoint_slice(
        ports=[{"name": "grpc", "port": 8080, "protocol": "TCP", "appProtocol": "grpc"}],
        endpoints=[
            {
                "addresses": ["10.0.0.1"],
                "conditions": {"ready": True},
                "zone": "zone-a",
                "nodeName": "node-1",
                "hostname": "reviews-0",
                "targetRef": {
                    "kind": "Pod",
                    "namespace": "default",
                    "name": "reviews-0",
                    "uid": "u",
                },
                "hints": {"forZones": [{"name": "zone-a"}], "forNodes": [{"name": "node-1"}]},
                "deprecatedTopology": {"kubernetes.io/hostname": "node-1"},
            },
            {"addresses": ["10.0.0.2"], "targetRef": {"kind": "Node", "name": "n"}},
        ],
    )
    model = parse_ok(service(), eps)
    (parsed,) = model.endpoint_slices
    assert parsed.service_name == "reviews"
    assert parsed.address_type == "IPv4"
    assert parsed.ports == (EndpointPort(name="grpc", port=8080, app_protocol="grpc"),)
    assert parsed.endpoints == (
        Endpoint(
            addresses=("10.0.0.1",),
            zone="zone-a",
            node_name="node-1",
            hostname="reviews-0",
            target_pod="reviews-0",
        ),
        Endpoint(addresses=("10.0.0.2",)),  # targetRef to a non-Pod: no target_pod
    )
    assert model.endpoint_slices_for(model.services[0]) == (parsed,)


def test_endpoint_port_name_defaults_to_empty_and_links_an_unnamed_service_port() -> None:
    svc = service(ports=[{"port": 80}])
    model = parse_ok(svc, endpoint_slice(ports=[{"port": 8080}]))
    assert model.endpoint_slices[0].ports[0].name == ""


def test_endpoint_slice_port_names_must_match_service_ports() -> None:
    _, problems = parse(
        service(),
        endpoint_slice(
            ports=[{"name": "grpc", "port": 1}, {"name": "http", "port": 2}, {"port": 3}]
        ),
    )
    assert lines(problems) == [
        "mesh.yaml: EndpointSlice default/reviews-abc: ports[1].name: Service default/reviews "
        'has no port named "http" (port names: "grpc")',
        "mesh.yaml: EndpointSlice default/reviews-abc: ports[2].name: an unnamed port matches "
        'no port of Service default/reviews (port names: "grpc")',
    ]


def test_endpoint_slice_without_its_service_or_label() -> None:
    orphan = endpoint_slice("orphan-abc", service="ratings")
    unlabeled = endpoint_slice("unlabeled")
    del unlabeled["metadata"]["labels"]
    model, problems = parse(orphan, unlabeled)
    assert lines(problems) == [
        "mesh.yaml: EndpointSlice default/orphan-abc: metadata.labels: Service default/ratings "
        "(label kubernetes.io/service-name) not found",
        "mesh.yaml: EndpointSlice default/unlabeled: metadata.labels: label "
        '"kubernetes.io/service-name" is required (it names the Service of this slice)',
    ]
    assert [s.name for s in model.endpoint_slices] == ["orphan-abc"]  # kept: harmless


@pytest.mark.parametrize(
    ("address_type", "address", "expected"),
    [
        ("IPv4", "10.0.0.1", None),
        ("IPv6", "fd00::1", None),
        ("FQDN", "reviews.example.com", None),
        ("IPv4", "fd00::1", 'must be an IPv4 address (addressType), got "fd00::1"'),
        ("IPv4", "10.0.0.300", 'must be an IPv4 address, got "10.0.0.300"'),
        ("FQDN", "not a name", 'must be a DNS name, got "not a name"'),
    ],
)
def test_endpoint_addresses_match_the_address_type(
    address_type: str, address: str, expected: str | None
) -> None:
    eps = endpoint_slice(endpoints=[{"addresses": [address]}])
    eps["addressType"] = address_type
    _, problems = parse(service(), eps)
    want = (
        []
        if expected is None
        else [
            f"mesh.yaml: EndpointSlice default/reviews-abc: endpoints[0].addresses[0]: {expected}"
        ]
    )
    assert lines(problems) == want


# ------------------------------------------------------------- metadata and kinds


def test_namespace_defaults_to_default() -> None:
    svc = service()
    del svc["metadata"]["namespace"]
    assert parse_ok(svc).services[0].namespace == "default"


def test_kind_list_is_unwrapped() -> None:
    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [service(), endpoint_slice()],
        "metadata": {"resourceVersion": ""},
    }
    model = parse_ok(listed)
    assert len(model.services) == 1 and len(model.endpoint_slices) == 1


def test_typed_list_from_the_api_fills_in_kind_and_api_version() -> None:
    item = service()
    del item["apiVersion"], item["kind"]
    listed = {"apiVersion": "v1", "kind": "ServiceList", "items": [item], "metadata": {}}
    assert parse_ok(listed).services[0].name == "reviews"


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}},
            'mesh.yaml: Deployment default/web: kind: unsupported kind "Deployment" (supported: '
            "Service, EndpointSlice, GRPCRoute, HTTPRoute, TrafficPolicy, AccessPolicy, "
            "MeshConfig)",
        ),
        (
            {"apiVersion": "v1", "metadata": {"name": "x"}},
            "mesh.yaml: <no kind> default/x: kind: is required",
        ),
        (
            {**service(), "apiVersion": "v2"},
            "mesh.yaml: Service default/reviews: apiVersion: must be v1 for Service, got "
            'string "v2"',
        ),
        (
            {**endpoint_slice(), "apiVersion": "discovery.k8s.io/v1beta1"},
            "mesh.yaml: EndpointSlice default/reviews-abc: apiVersion: must be "
            'discovery.k8s.io/v1 for EndpointSlice, got string "discovery.k8s.io/v1beta1"',
        ),
        (
            {**service(), "metadata": {"namespace": "default"}},
            "mesh.yaml: Service default/<no name>: metadata.name: is required",
        ),
        (
            {**service(), "metadata": {"name": "reviews", "nmespace": "x"}},
            "mesh.yaml: Service default/reviews: metadata.nmespace: unknown field "
            '(did you mean "namespace"?)',
        ),
        (
            {**service(), "metadata": {"name": "reviews", "labels": {"version": 2}}},
            'mesh.yaml: Service default/reviews: metadata.labels: key "version": keys and '
            'values must be strings, got integer 2 (quote it: "2")',
        ),
        (
            {**service(), "extra": 1},
            "mesh.yaml: Service default/reviews: extra: unknown field (known fields: apiVersion, "
            "kind, metadata, spec, status)",
        ),
    ],
)
def test_kind_and_metadata_problems(obj: dict, expected: str) -> None:
    _, problems = parse(obj)
    assert lines(problems) == [expected]


def test_a_document_that_is_not_an_object() -> None:
    _, problems = parse(["not", "an", "object"])  # type: ignore[arg-type]
    assert lines(problems) == [
        "mesh.yaml: must be a Kubernetes object with apiVersion and kind, got a list"
    ]


def test_endpoint_slice_port_may_have_an_empty_name() -> None:
    from xds_server.sources import parse_objects

    objects = [
        ("s.yaml", {"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "solo", "namespace": "default"},
                    "spec": {"ports": [{"port": 80}]}}),
        ("s.yaml", {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": "solo-x", "namespace": "default",
                                 "labels": {"kubernetes.io/service-name": "solo"}},
                    "addressType": "IPv4", "ports": [{"name": "", "port": 8080}],
                    "endpoints": [{"addresses": ["10.0.0.1"]}]}),
    ]
    model, problems = parse_objects(objects)
    assert problems == []
    assert model.endpoint_slices[0].ports[0].name == ""
