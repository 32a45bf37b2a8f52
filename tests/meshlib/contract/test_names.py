"""Names one side builds and the other parses: server Listeners and Clusters."""

from __future__ import annotations

import pytest

from meshlib.contract import (
    SERVER_LISTENER_TEMPLATE,
    outbound_cluster_name,
    server_listener_name,
    service_of,
)


@pytest.mark.parametrize(("host", "name"), [
    ("10.0.0.7", "grpc/server?xds.resource.listening_address=10.0.0.7:50051"),
    ("::1", "grpc/server?xds.resource.listening_address=[::1]:50051"),
    ("[::1]", "grpc/server?xds.resource.listening_address=[::1]:50051"),
])
def test_server_listener_names_fill_the_bootstrap_template(host, name):
    assert server_listener_name(host, 50051) == name
    assert name.startswith(SERVER_LISTENER_TEMPLATE.removesuffix("%s"))


def test_service_of_parses_what_outbound_cluster_name_builds():
    name = outbound_cluster_name("reviews.default.svc.cluster.local", 50051)
    assert name == "outbound|50051||reviews.default.svc.cluster.local"
    assert service_of(name) == "reviews.default:50051"
    assert service_of(outbound_cluster_name("reviews.default.svc.example.org", 8080)) == (
        "reviews.default:8080")


@pytest.mark.parametrize("name", ["plain", "inbound|50051||reviews", "outbound|1|reviews"])
def test_other_cluster_names_are_their_own_service(name):
    assert service_of(name) == name
