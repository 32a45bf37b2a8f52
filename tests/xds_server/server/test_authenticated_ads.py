"""Authenticated xDS: the xDS port of a secure control plane serves ADS over mTLS only,
to clients whose mesh certificate names one SPIFFE ID; the namespace a node gets is its
identity's, whatever its metadata claims; one identity can make only so many snapshot
groups. Real TLS on loopback, a real control plane, raw ADS streams."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from meshlib.contract import LISTENER, SpiffeId
from tests.xds_server.server.secure_ads import SHOP, TD, SecureControlPlane, secure_fixture  # noqa: F401 - fixture
from xds_server.ca import CertificateAuthority
from xds_server.control_plane import MAX_GROUPS_PER_IDENTITY
from xds_server.node import NodeGroup
from xds_server.server import vouched_node


def _node(node_id: str, namespace: str, **extra: str) -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update({"MESHLIB_KIND": "meshlib", "NAMESPACE": namespace, **extra})
    return base_pb2.Node(id=node_id, user_agent_name="meshlib", metadata=metadata)


def _first_listener(channel: grpc.Channel, node: base_pb2.Node,
                    name: str = "reviews") -> discovery_pb2.DiscoveryResponse:
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    request = discovery_pb2.DiscoveryRequest(node=node, type_url=LISTENER,
                                             resource_names=[name])
    stream = stub.StreamAggregatedResources(iter([request]), timeout=5)
    try:
        return next(stream)
    finally:
        stream.cancel()


def _route_of(response: discovery_pb2.DiscoveryResponse) -> str:
    listener = listener_pb2.Listener()
    response.resources[0].Unpack(listener)
    manager = http_connection_manager_pb2.HttpConnectionManager()
    listener.api_listener.api_listener.Unpack(manager)
    return str(manager.rds.route_config_name)


def test_a_client_without_a_certificate_is_refused_at_the_handshake(secure):
    with secure.channel(None) as channel, pytest.raises(grpc.RpcError) as refused:
        _first_listener(channel, _node("anon", "shop"))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert secure.groups() == []


def _client_certificate(ca: CertificateAuthority, names: list[x509.GeneralName]
                        ) -> tuple[bytes, bytes]:
    """A client certificate the mesh CA signed, with ``names`` as its SANs."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .add_extension(x509.SubjectAlternativeName(names), critical=True)
            .sign(ca._key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM) + ca.chain_pem()


@pytest.mark.parametrize("names", [
    [x509.DNSName("frontend.shop.svc")],                               # no SPIFFE ID
    [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/a"),
     x509.UniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/b")],  # two
    [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/Shop/sa/a")],  # not a mesh ID
], ids=["dns-only", "two-ids", "invalid-id"])
def test_a_certificate_naming_no_one_workload_is_unauthenticated(secure, names):
    """Signed by the mesh CA, so the handshake passes, but it names no single mesh
    workload."""
    with secure.channel(_client_certificate(secure.ca, names)) as channel, \
            pytest.raises(grpc.RpcError) as refused:
        _first_listener(channel, _node("who", "shop"))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "anonymous xDS clients are refused" in refused.value.details()
    assert secure.groups() == []


def test_the_control_plane_s_serving_certificate_is_no_client_certificate(secure):
    with secure.channel((secure.serving.key_pem, secure.serving.chain_pem)) as channel, \
            pytest.raises(grpc.RpcError) as refused:
        _first_listener(channel, _node("who", "shop"))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # serverAuth only


def test_an_authenticated_client_gets_its_identity_s_namespace(secure):
    with secure.channel(secure.certificate(SHOP)) as channel:
        response = _first_listener(channel, _node("frontend-1", "shop"))
    assert _route_of(response) == "reviews.shop.svc.cluster.local:50051"


def test_a_forged_namespace_changes_nothing(secure, caplog):
    """The same identity claiming ``payments``: it still gets shop's view, the node is
    recorded as shop's, and the claim is logged."""
    with secure.channel(secure.certificate(SHOP)) as channel:
        honest = _first_listener(channel, _node("frontend-1", "shop"))
        forged = _first_listener(channel, _node("frontend-2", "payments",
                                                MESHLIB_PEER_IDENTITY="spiffe://x/ns/payments/sa/y"))
    assert _route_of(forged) == _route_of(honest) == "reviews.shop.svc.cluster.local:50051"
    assert forged.version_info == honest.version_info
    assert "claims namespace 'payments'" in caplog.text and "the identity wins" in caplog.text
    assert secure.cp.cache.get_snapshot("meshlib/payments") is None  # none for the claim


def test_one_identity_makes_a_bounded_number_of_groups(secure):
    """Envoy nodes are grouped by outbound port too: an identity that varies it gets
    refused once it has its share of groups; other identities are not affected."""
    def envoy(port: int) -> base_pb2.Node:
        node = _node(f"sidecar-{port}", "shop", OUTBOUND_PORT=str(port))
        node.user_agent_name = "envoy"
        return node

    with secure.channel(secure.certificate(SHOP)) as channel:
        for port in range(MAX_GROUPS_PER_IDENTITY):
            _first_listener(channel, envoy(15000 + port), name="")
        with pytest.raises(grpc.RpcError) as refused:
            _first_listener(channel, envoy(16000), name="")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"already use {MAX_GROUPS_PER_IDENTITY} node groups" in refused.value.details()
    assert secure.cp.metrics.refused_groups._value.get() == 1
    other = SpiffeId(TD, "shop", "cart")
    with secure.channel(secure.certificate(other)) as channel:
        _first_listener(channel, envoy(16000), name="")


def test_without_authentication_a_claimed_identity_is_dropped():
    node = _node("n", "shop", MESHLIB_PEER_IDENTITY=str(SHOP))
    vouched = vouched_node(node, identity=None)
    assert "MESHLIB_PEER_IDENTITY" not in vouched.metadata.fields
    assert vouched.metadata.fields["NAMESPACE"].string_value == "shop"
    assert node.metadata.fields["MESHLIB_PEER_IDENTITY"].string_value == str(SHOP)  # a copy


def test_the_group_of_a_vouched_node_is_its_identity_s():
    from xds_server.node import group_of

    vouched = vouched_node(_node("n", "payments"), identity=SHOP)
    assert group_of(vouched) == NodeGroup(kind="meshlib", namespace="shop", tls=True)
    assert vouched.metadata.fields["MESHLIB_PEER_IDENTITY"].string_value == str(SHOP)
