"""The authorization interceptors on real gRPC servers on loopback with real mTLS
(certificates from the mesh CA), sync and grpc.aio, for every call kind."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.config.rbac.v3 import rbac_pb2 as config_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import path_pb2, string_pb2
from google.protobuf import any_pb2

from interceptors import AioAuthorizationInterceptor, AuthorizationInterceptor
from meshlib import SpiffeId
from meshlib.security import AuthorizationPolicy, decode_rbac_filters, peer_identity
from xds_server.ca import CertificateAuthority

SERVICE = "demo.Reviews"
KINDS = ("UnaryUnary", "UnaryStream", "StreamUnary", "StreamStream")
ANSWERS = {"UnaryUnary": b"a", "UnaryStream": [b"a", b"a"], "StreamUnary": b"ab",
           "StreamStream": [b"a", b"b"]}
REVIEWS = SpiffeId("cluster.local", "default", "reviews")  # the server
FRONTEND = SpiffeId("cluster.local", "default", "frontend")  # allowed
INTRUDER = SpiffeId("cluster.local", "default", "intruder")  # denied by a DENY rule
OUTSIDER = SpiffeId("cluster.local", "other", "outsider")  # in no ALLOW rule
DENIED = grpc.StatusCode.PERMISSION_DENIED


# ------------------------------------------------------------ policies

def _filter(name: str, action: int, policies: dict[str, config_pb2.Policy]
            ) -> hcm_pb2.HttpFilter:
    packed = any_pb2.Any()
    packed.Pack(rbac_pb2.RBAC(rules=config_pb2.RBAC(action=action, policies=policies)))
    return hcm_pb2.HttpFilter(name=name, typed_config=packed)


def _only(identity: SpiffeId, method_prefix: str = "/") -> config_pb2.Policy:
    return config_pb2.Policy(
        principals=[config_pb2.Principal(authenticated=config_pb2.Principal.Authenticated(
            principal_name=string_pb2.StringMatcher(exact=identity.uri)))],
        permissions=[config_pb2.Permission(url_path=path_pb2.PathMatcher(
            path=string_pb2.StringMatcher(prefix=method_prefix)))])


def access_policy(allowed: SpiffeId = FRONTEND) -> AuthorizationPolicy:
    """What the control plane sends: DENY the intruder, then ALLOW ``allowed``."""
    policy = decode_rbac_filters([
        _filter("meshlib.rbac.deny", config_pb2.RBAC.DENY,
                {"default/reviews/deny-intruder": _only(INTRUDER)}),
        _filter("meshlib.rbac.allow", config_pb2.RBAC.ALLOW,
                {"default/reviews/allow-reads": _only(allowed, f"/{SERVICE}/")})])
    assert policy is not None
    return policy


# ------------------------------------------------------------ certificates

@dataclass(frozen=True)
class Pki:
    roots: bytes
    keys: dict[str, tuple[bytes, bytes]]  # service account -> (key PEM, certificate PEM)

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([self.keys["reviews"]], root_certificates=self.roots,
                                           require_client_auth=True)

    def channel_args(self, who: str) -> tuple[grpc.ChannelCredentials, list[tuple[str, str]]]:
        key, cert = self.keys[who]
        return (grpc.ssl_channel_credentials(self.roots, key, cert),
                [("grpc.ssl_target_name_override", REVIEWS.dns_name)])


def _issue(ca: CertificateAuthority, identity: SpiffeId) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, ca.issue(csr, identity).cert_pem


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = CertificateAuthority.create()
    return Pki(ca.roots_pem(), {i.service_account: _issue(ca, i)
                                for i in (REVIEWS, FRONTEND, INTRUDER, OUTSIDER)})


# ------------------------------------------------------------ handlers and calls

class Reviews:
    """Every kind echoes; each call records its kind and ``peer_identity``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, SpiffeId | None]] = []

    def unary_unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.calls.append(("UnaryUnary", peer_identity(context)))
        return request

    def unary_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self.calls.append(("UnaryStream", peer_identity(context)))
        yield request
        yield request

    def stream_unary(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        self.calls.append(("StreamUnary", peer_identity(context)))
        return b"".join(requests)

    def stream_stream(self, requests: Iterator[bytes],
                      context: grpc.ServicerContext) -> Iterator[bytes]:
        self.calls.append(("StreamStream", peer_identity(context)))
        yield from requests

    async def aunary_unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return self.unary_unary(request, context)

    async def aunary_stream(self, request: bytes,
                            context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for response in self.unary_stream(request, context):
            yield response

    async def astream_unary(self, requests: AsyncIterator[bytes],
                            context: grpc.aio.ServicerContext) -> bytes:
        self.calls.append(("StreamUnary", peer_identity(context)))
        return b"".join([r async for r in requests])

    async def astream_stream(self, requests: AsyncIterator[bytes],
                             context: grpc.aio.ServicerContext) -> None:
        self.calls.append(("StreamStream", peer_identity(context)))
        async for request in requests:  # the context.write() style
            await context.write(request)

    def handler(self, aio: bool) -> grpc.GenericRpcHandler:
        prefix = "a" if aio else ""
        return grpc.method_handlers_generic_handler(SERVICE, {
            "UnaryUnary": grpc.unary_unary_rpc_method_handler(
                getattr(self, prefix + "unary_unary")),
            "UnaryStream": grpc.unary_stream_rpc_method_handler(
                getattr(self, prefix + "unary_stream")),
            "StreamUnary": grpc.stream_unary_rpc_method_handler(
                getattr(self, prefix + "stream_unary")),
            "StreamStream": grpc.stream_stream_rpc_method_handler(
                getattr(self, prefix + "stream_stream")),
        })


Outcome = tuple[grpc.StatusCode, Any]  # (code, answer or details)


def call(channel: grpc.Channel, kind: str) -> Outcome:
    """One call of ``kind``: OK and the answer, or the error's code and details."""
    method = f"/{SERVICE}/{kind}"
    try:
        if kind == "UnaryUnary":
            answer = channel.unary_unary(method)(b"a", timeout=5)
        elif kind == "UnaryStream":
            answer = list(channel.unary_stream(method)(b"a", timeout=5))
        elif kind == "StreamUnary":
            answer = channel.stream_unary(method)(iter([b"a", b"b"]), timeout=5)
        else:
            answer = list(channel.stream_stream(method)(iter([b"a", b"b"]), timeout=5))
    except grpc.RpcError as err:
        return err.code(), err.details()
    return grpc.StatusCode.OK, answer


async def acall(channel: grpc.aio.Channel, kind: str) -> Outcome:
    """:func:`call` on a grpc.aio channel."""
    method = f"/{SERVICE}/{kind}"

    async def two() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    try:
        if kind == "UnaryUnary":
            answer = await channel.unary_unary(method)(b"a", timeout=5)
        elif kind == "UnaryStream":
            answer = [r async for r in channel.unary_stream(method)(b"a", timeout=5)]
        elif kind == "StreamUnary":
            answer = await channel.stream_unary(method)(two(), timeout=5)
        else:
            answer = [r async for r in channel.stream_stream(method)(two(), timeout=5)]
    except grpc.RpcError as err:
        return err.code(), err.details()
    return grpc.StatusCode.OK, answer


ALLOWED_ALL = {kind: (grpc.StatusCode.OK, ANSWERS[kind]) for kind in KINDS}
DENIED_ALL = {kind: (DENIED, "permission denied") for kind in KINDS}
# grpc/grpc#36066: when a server ends a client-streaming call before the client has
# sent all its messages, a grpc.aio *client* reports its own failed write instead of
# the server's status, now and then. The server answered PERMISSION_DENIED all the same.
_AIO_WRITE_RACE = (grpc.StatusCode.INTERNAL, "Internal error from Core")


def aio_denied(outcomes: dict[str, Outcome]) -> bool:
    """Whether every call was denied, as far as a grpc.aio client can tell."""
    return all(outcome == DENIED_ALL[kind] or (
        kind.startswith("Stream") and outcome == _AIO_WRITE_RACE)
        for kind, outcome in outcomes.items())


# ------------------------------------------------------------ servers

@pytest.fixture
def sync_server() -> Iterator[Callable[..., int]]:
    """``sync_server(handler, interceptor, tls=True, aio_style=False) -> port``; stopped
    at teardown."""
    servers: list[grpc.Server] = []

    def start(handler: grpc.GenericRpcHandler, interceptor: grpc.ServerInterceptor,
              credentials: grpc.ServerCredentials | None) -> int:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                             interceptors=[interceptor])
        server.add_generic_rpc_handlers((handler,))
        port = (server.add_insecure_port("127.0.0.1:0") if credentials is None
                else server.add_secure_port("127.0.0.1:0", credentials))
        server.start()
        servers.append(server)
        return port

    yield start
    for server in servers:
        server.stop(None).wait()


@pytest.fixture
async def aio_server() -> AsyncIterator[Callable[..., Any]]:
    """``await aio_server(handler, interceptor, credentials, **server_kwargs) -> port``."""
    servers: list[grpc.aio.Server] = []

    async def start(handler: grpc.GenericRpcHandler,
                    interceptor: grpc.aio.ServerInterceptor,
                    credentials: grpc.ServerCredentials | None, **kwargs: Any) -> int:
        server = grpc.aio.server(interceptors=[interceptor], **kwargs)
        server.add_generic_rpc_handlers((handler,))
        port = (server.add_insecure_port("127.0.0.1:0") if credentials is None
                else server.add_secure_port("127.0.0.1:0", credentials))
        await server.start()
        servers.append(server)
        return port

    yield start
    for server in servers:
        await server.stop(None)


# ------------------------------------------------------------ tests

def test_sync_mtls_server_checks_every_kind_before_the_handler(pki, sync_server, caplog):
    reviews = Reviews()
    current = [access_policy()]
    port = sync_server(reviews.handler(aio=False),
                       AuthorizationInterceptor(lambda: current[0]), pki.server_credentials())

    def outcomes(who: str) -> dict[str, Outcome]:
        credentials, options = pki.channel_args(who)
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options) as channel:
            return {kind: call(channel, kind) for kind in KINDS}

    with caplog.at_level(logging.INFO, "meshlib.authz"):
        assert outcomes("frontend") == ALLOWED_ALL
        assert outcomes("intruder") == DENIED_ALL  # by the DENY rule: no policy name
        assert outcomes("outsider") == DENIED_ALL  # in no ALLOW rule
    # Denied calls never reached a handler; allowed ones saw their caller's identity.
    assert reviews.calls == [(kind, FRONTEND) for kind in KINDS]
    denials = [r.getMessage() for r in caplog.records if r.name == "meshlib.authz"]
    assert len(denials) == 8 and all(r.levelno == logging.INFO for r in caplog.records)
    assert f"denied /{SERVICE}/StreamStream to {INTRUDER.uri}" in denials[3]
    assert "denied by policy 'default/reviews/deny-intruder' (DENY)" in denials[3]
    assert OUTSIDER.uri in denials[4] and "no ALLOW policy matched" in denials[4]

    # The xDS thread swaps the policy: the next call on the same connection sees it.
    credentials, options = pki.channel_args("outsider")
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options) as channel:
        assert call(channel, "UnaryUnary")[0] is DENIED
        current[0] = access_policy(allowed=OUTSIDER)
        assert call(channel, "UnaryUnary") == (grpc.StatusCode.OK, b"a")
        current[0] = None  # no policy: allow all
        assert call(channel, "StreamStream") == (grpc.StatusCode.OK, [b"a", b"b"])
    current[0] = access_policy(allowed=OUTSIDER)
    assert outcomes("frontend") == DENIED_ALL


def test_a_plaintext_caller_is_denied_by_allow_rules_naming_identities(sync_server):
    reviews = Reviews()
    policy = access_policy()
    port = sync_server(reviews.handler(aio=False), AuthorizationInterceptor(lambda: policy),
                       None)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert {kind: call(channel, kind) for kind in KINDS} == DENIED_ALL
    assert reviews.calls == []


async def test_aio_mtls_server_checks_every_kind_before_the_handler(pki, aio_server, caplog):
    reviews = Reviews()
    current = [access_policy()]
    port = await aio_server(reviews.handler(aio=True),
                            AioAuthorizationInterceptor(lambda: current[0]),
                            pki.server_credentials())

    async def outcomes(who: str) -> dict[str, Outcome]:
        credentials, options = pki.channel_args(who)
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials,
                                           options) as channel:
            return {kind: await acall(channel, kind) for kind in KINDS}

    with caplog.at_level(logging.INFO, "meshlib.authz"):
        assert await outcomes("frontend") == ALLOWED_ALL
        assert aio_denied(await outcomes("intruder"))
    assert reviews.calls == [(kind, FRONTEND) for kind in KINDS]
    assert "deny-intruder" in caplog.text
    current[0] = access_policy(allowed=INTRUDER)  # still denied: DENY comes first
    assert aio_denied(await outcomes("intruder"))
    current[0] = None
    assert await outcomes("intruder") == ALLOWED_ALL


async def test_aio_server_with_sync_handlers_denies_too(aio_server):
    """Sync handlers on a grpc.aio server get a sync context, and a response-streaming
    one is called on the event loop: it is refused without abort() (which would wait
    for the loop), and no worker thread is left waiting at exit."""
    reviews = Reviews()
    policy = access_policy()
    pool = futures.ThreadPoolExecutor(max_workers=2)
    try:
        port = await aio_server(reviews.handler(aio=False),
                                AioAuthorizationInterceptor(lambda: policy), None,
                                migration_thread_pool=pool)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert aio_denied({kind: await acall(channel, kind) for kind in KINDS})
        assert reviews.calls == []
    finally:
        pool.shutdown(wait=False)
