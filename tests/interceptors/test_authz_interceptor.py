"""The authorization interceptors on real gRPC servers with real mTLS, sync and aio."""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
import pytest
from envoy.config.rbac.v3 import rbac_pb2 as config_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import path_pb2, string_pb2
from google.protobuf import any_pb2

import meshlib
from interceptors import AioAuthorizationInterceptor, AuthorizationInterceptor
from meshlib.security import AuthorizationPolicy, decode_rbac_filters
from meshlib.security._certificates import WorkloadCertificate, make_key_and_csr
from xds_server.ca import CertificateAuthority

REVIEWS = meshlib.SpiffeId("cluster.local", "default", "reviews")
FRONTEND = meshlib.SpiffeId("cluster.local", "default", "frontend")
INTRUDER = meshlib.SpiffeId("cluster.local", "default", "intruder")


def _b(x: bytes) -> bytes:
    return x


def allow_frontend_to_get() -> AuthorizationPolicy:
    config = rbac_pb2.RBAC(rules=config_pb2.RBAC(action=config_pb2.RBAC.ALLOW, policies={
        "default/reviews/rules[0]": config_pb2.Policy(
            principals=[config_pb2.Principal(authenticated=config_pb2.Principal.Authenticated(
                principal_name=string_pb2.StringMatcher(exact=FRONTEND.uri)))],
            permissions=[config_pb2.Permission(url_path=path_pb2.PathMatcher(
                path=string_pb2.StringMatcher(prefix="/demo.Reviews/")))])}))
    packed = any_pb2.Any()
    packed.Pack(config)
    policy = decode_rbac_filters([hcm_pb2.HttpFilter(name="meshlib.rbac.allow",
                                                     typed_config=packed)])
    assert policy is not None
    return policy


@pytest.fixture(scope="module")
def certs() -> dict[str, WorkloadCertificate]:
    ca = CertificateAuthority.create()
    out = {}
    for identity in (REVIEWS, FRONTEND, INTRUDER):
        key, csr = make_key_and_csr(identity)
        out[identity.service_account] = WorkloadCertificate.from_pem(
            key, ca.issue(csr, identity).cert_pem, ca.roots_pem())
    return out


class Handlers:
    def __init__(self) -> None:
        self.calls: list[str | None] = []

    def get(self, request: bytes, context) -> bytes:  # type: ignore[no-untyped-def]
        peer = meshlib.peer_identity(context)
        self.calls.append(str(peer) if peer else None)
        return str(peer).encode()

    def listing(self, request: bytes, context):  # type: ignore[no-untyped-def]
        self.calls.append("list")
        yield b"a"
        yield b"b"

    async def aget(self, request: bytes, context) -> bytes:  # type: ignore[no-untyped-def]
        return self.get(request, context)

    async def alisting(self, request: bytes, context):  # type: ignore[no-untyped-def]
        self.calls.append("list")
        yield b"a"

    def generic(self, aio: bool) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler("demo.Reviews", {
            "Get": grpc.unary_unary_rpc_method_handler(self.aget if aio else self.get),
            "List": grpc.unary_stream_rpc_method_handler(
                self.alisting if aio else self.listing)})


def server_creds(certs, tls: bool) -> grpc.ServerCredentials | None:  # type: ignore[no-untyped-def]
    if not tls:
        return None
    r = certs["reviews"]
    return grpc.ssl_server_credentials([(r.key_pem, r.chain_pem)],
                                       root_certificates=r.roots_pem, require_client_auth=True)


def channel(certs, port: int, who: str | None) -> grpc.Channel:  # type: ignore[no-untyped-def]
    if who is None:
        return grpc.insecure_channel(f"127.0.0.1:{port}")
    c = certs[who]
    return grpc.secure_channel(
        f"127.0.0.1:{port}", grpc.ssl_channel_credentials(c.roots_pem, c.key_pem, c.chain_pem),
        options=[("grpc.ssl_target_name_override", REVIEWS.dns_name)])


def test_sync_server_allows_denies_and_swaps_live(certs, caplog):
    handlers = Handlers()
    current: list[AuthorizationPolicy | None] = [allow_frontend_to_get()]
    server = grpc.server(futures.ThreadPoolExecutor(4),
                         interceptors=[AuthorizationInterceptor(lambda: current[0])])
    server.add_generic_rpc_handlers((handlers.generic(aio=False),))
    port = server.add_secure_port("127.0.0.1:0", server_creds(certs, True))
    server.start()
    try:
        with channel(certs, port, "frontend") as ok, channel(certs, port, "intruder") as bad:
            assert ok.unary_unary("/demo.Reviews/Get", _b, _b)(b"", timeout=5) == \
                FRONTEND.uri.encode()
            assert list(ok.unary_stream("/demo.Reviews/List", _b, _b)(b"", timeout=5)) == \
                [b"a", b"b"]
            with caplog.at_level(logging.INFO, "meshlib.authz"):
                for method in ("/demo.Reviews/Get", "/demo.Reviews/List"):
                    call = (bad.unary_unary if method.endswith("Get") else bad.unary_stream)
                    with pytest.raises(grpc.RpcError) as err:
                        result = call(method, _b, _b)(b"", timeout=5)
                        list(result) if method.endswith("List") else None
                    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
                    assert err.value.details() == "permission denied"  # no policy name
            assert "intruder" in caplog.text and "no ALLOW policy" in caplog.text
            assert handlers.calls == [FRONTEND.uri, "list"]  # denied calls never ran
            current[0] = None  # the control plane dropped the policy: allow all
            assert bad.unary_unary("/demo.Reviews/Get", _b, _b)(b"", timeout=5) == \
                INTRUDER.uri.encode()
    finally:
        server.stop(None)


def test_a_plaintext_caller_is_denied_by_identity_rules(certs):
    handlers = Handlers()
    policy = allow_frontend_to_get()
    server = grpc.server(futures.ThreadPoolExecutor(2),
                         interceptors=[AuthorizationInterceptor(lambda: policy)])
    server.add_generic_rpc_handlers((handlers.generic(aio=False),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with channel(certs, port, None) as plain, pytest.raises(grpc.RpcError) as err:
            plain.unary_unary("/demo.Reviews/Get", _b, _b)(b"", timeout=5)
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert handlers.calls == []
    finally:
        server.stop(None)


async def test_aio_server_allows_and_denies(certs):
    handlers = Handlers()
    policy = allow_frontend_to_get()
    server = grpc.aio.server(interceptors=[AioAuthorizationInterceptor(lambda: policy)])
    server.add_generic_rpc_handlers((handlers.generic(aio=True),))
    port = server.add_secure_port("127.0.0.1:0", server_creds(certs, True))
    await server.start()
    try:
        for who, code in (("frontend", grpc.StatusCode.OK),
                          ("intruder", grpc.StatusCode.PERMISSION_DENIED)):
            c = certs[who]
            creds = grpc.ssl_channel_credentials(c.roots_pem, c.key_pem, c.chain_pem)
            async with grpc.aio.secure_channel(
                    f"127.0.0.1:{port}", creds,
                    options=[("grpc.ssl_target_name_override", REVIEWS.dns_name)]) as ch:
                for method, kind in (("/demo.Reviews/Get", "unary_unary"),
                                     ("/demo.Reviews/List", "unary_stream")):
                    call = getattr(ch, kind)(method, _b, _b)(b"", timeout=5)
                    try:
                        if kind == "unary_unary":
                            await call
                        else:
                            [m async for m in call]
                        got = grpc.StatusCode.OK
                    except grpc.aio.AioRpcError as err:
                        got = err.code()
                    assert got is code, (who, method)
        assert handlers.calls == [FRONTEND.uri, "list"]
    finally:
        await server.stop(None)
