"""The certificate service over real gRPC: tokens, identities, CSRs, TTLs."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshlib.contract import SpiffeId
from meshlib.contract.ca import (
    CREATE_CERTIFICATE,
    CertificateRequest,
    CertificateResponse,
)
from meshlib.errors import ConfigError
from meshlib.security._certificates import CertificateError, make_key_and_csr, request_certificate
from xds_server.ca import (
    DEFAULT_ISSUE_BURST,
    DEFAULT_ISSUE_RATE,
    MAX_VALIDITY_DURATION,
    AuthenticationError,
    CertificateAuthority,
    CertificateService,
    IssueBuckets,
    IssueLimit,
    StaticTokens,
    hash_token,
)
from xds_server.cache import SnapshotCache
from xds_server.server import serve

FRONTEND = SpiffeId("cluster.local", "default", "frontend")
REVIEWS = SpiffeId("cluster.local", "default", "reviews")
TOKEN = "frontend-token-0123456789"
SHOP_TOKEN = "shop-wide-token-0123456789"


@pytest.fixture
async def ca_address():
    ca = CertificateAuthority.create()
    tokens = StaticTokens([(hash_token(TOKEN), "default/frontend"),
                           (hash_token(SHOP_TOKEN), "shop/*")])
    results: Counter[str] = Counter()
    service = CertificateService(ca, tokens, ttl=lambda: dt.timedelta(hours=24),
                                 on_result=lambda r: results.update([r]))
    server, port = await serve(("127.0.0.1", 0), SnapshotCache(), services=[service])
    yield f"127.0.0.1:{port}", ca, results
    await server.stop(0)


async def test_a_workload_gets_a_certificate_for_itself(ca_address):
    address, ca, results = ca_address
    cert = await request_certificate(address, FRONTEND, TOKEN)
    assert cert.spiffe_id == FRONTEND
    leaf = x509.load_pem_x509_certificate(cert.chain_pem)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [FRONTEND.uri]
    assert san.get_values_for_type(x509.DNSName) == [FRONTEND.dns_name]
    assert cert.roots_pem == ca.roots_pem()
    assert dt.timedelta(hours=23) < cert.not_after - dt.datetime.now(dt.UTC) \
        <= dt.timedelta(hours=24)
    assert results == {"issued": 1}


async def test_a_request_may_shorten_the_ttl_but_not_lengthen_it(ca_address):
    address, _, _ = ca_address
    short = await request_certificate(address, FRONTEND, TOKEN, ttl=5)
    left = (short.not_after - dt.datetime.now(dt.UTC)).total_seconds()
    assert 3 < left <= 5
    long = await request_certificate(address, FRONTEND, TOKEN, ttl=10 * 24 * 3600)
    assert long.not_after - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=24)


async def test_a_csr_for_another_identity_is_refused(ca_address, caplog):
    address, _, results = ca_address
    with caplog.at_level(logging.WARNING, "xds_server.ca"), \
            pytest.raises(CertificateError) as err:
        await request_certificate(address, REVIEWS, TOKEN)
    assert err.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert "may not get a certificate for spiffe://cluster.local/ns/default/sa/reviews" \
        in str(err.value)
    assert results == {"not_permitted": 1}
    assert TOKEN not in caplog.text  # tokens are never logged


async def test_a_namespace_wide_token_covers_its_namespace_only(ca_address):
    address, _, _ = ca_address
    cert = await request_certificate(address, SpiffeId("cluster.local", "shop", "cart"),
                                     SHOP_TOKEN)
    assert cert.spiffe_id.namespace == "shop"
    with pytest.raises(CertificateError) as err:
        await request_certificate(address, FRONTEND, SHOP_TOKEN)
    assert err.value.code is grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("token", ["", "not-a-token", "x" * 5000])
async def test_bad_tokens_are_unauthenticated(ca_address, token):
    address, _, results = ca_address
    with pytest.raises(CertificateError) as err:
        await _raw(address, make_key_and_csr(FRONTEND)[1].decode(), token)
    assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert results == {"unauthenticated": 1}


async def test_no_authorization_metadata_is_unauthenticated(ca_address):
    address, _, _ = ca_address
    with pytest.raises(CertificateError, match="missing 'authorization: Bearer") as err:
        await _raw(address, make_key_and_csr(FRONTEND)[1].decode(), None)
    assert err.value.code is grpc.StatusCode.UNAUTHENTICATED


def _csr_with(sans: list[x509.GeneralName] | None, curve: ec.EllipticCurve | None = None
              ) -> str:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(("csr", "message"), [
    ("garbage", "not a PEM certificate request"),
    ("", "CSR must be 1 to"),
    (_csr_with(None), "no subjectAltName"),
    (_csr_with([x509.UniformResourceIdentifier(FRONTEND.uri),
                x509.UniformResourceIdentifier(REVIEWS.uri)]), "exactly one SPIFFE ID"),
    (_csr_with([x509.UniformResourceIdentifier("https://example.com")]), "not a SPIFFE ID"),
    (_csr_with([x509.UniformResourceIdentifier(
        "spiffe://other.domain/ns/default/sa/frontend")]), "not in trust domain"),
    (_csr_with([x509.UniformResourceIdentifier(FRONTEND.uri)], ec.SECP384R1()),
     "must be ECDSA P-256"),
    # identities whose DNS form another identity shares
    (_csr_with([x509.UniformResourceIdentifier(
        "spiffe://cluster.local/ns/default/sa/front.end")]), "must be a DNS-1123 label"),
    (_csr_with([x509.UniformResourceIdentifier(
        "spiffe://cluster.local/ns/default/sa/Frontend")]), "must be a DNS-1123 label"),
])
async def test_bad_csrs_get_clear_errors_and_no_certificate(ca_address, csr, message):
    address, _, results = ca_address
    with pytest.raises(CertificateError, match=message) as err:
        await _raw(address, csr, TOKEN)
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert results == {"bad_csr": 1}


async def test_without_an_authenticator_nothing_is_issued():
    service = CertificateService(CertificateAuthority.create(), None,
                                 ttl=lambda: dt.timedelta(hours=1))
    server, port = await serve(("127.0.0.1", 0), SnapshotCache(), services=[service])
    try:
        with pytest.raises(CertificateError, match="--token-file") as err:
            await request_certificate(f"127.0.0.1:{port}", FRONTEND, TOKEN)
        assert err.value.code is grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await server.stop(0)


async def _raw(address: str, csr: str, token: str | None) -> CertificateResponse:
    metadata = () if token is None else (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(CREATE_CERTIFICATE,
                                   request_serializer=CertificateRequest.SerializeToString,
                                   response_deserializer=CertificateResponse.FromString)
        try:
            return await call(CertificateRequest(csr=csr), metadata=metadata, timeout=5)
        except grpc.aio.AioRpcError as err:
            raise CertificateError(err.details() or "", code=err.code()) from err


# ---------------------------------------------------------------- the token file


def test_token_file_hashes_and_wildcards(tmp_path):
    path = tmp_path / "tokens.yaml"
    path.write_text(f"tokens:\n- serviceAccount: default/frontend\n  sha256: "
                    f"{hash_token(TOKEN)}\n- serviceAccount: shop/*\n  token: {SHOP_TOKEN}\n")
    path.chmod(0o600)
    tokens = StaticTokens.from_file(path)
    assert tokens.authenticate(TOKEN).permits(FRONTEND)
    assert not tokens.authenticate(TOKEN).permits(REVIEWS)
    assert tokens.authenticate(SHOP_TOKEN).permits(SpiffeId("cluster.local", "shop", "x"))


def test_token_file_problems_name_the_entry_and_field(tmp_path):
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n- serviceAccount: frontend\n  token: long-enough-token-1234\n"
                    "- serviceAccount: a/b\n  token: short\n"
                    "- serviceAccount: a/b\n  sha256: xyz\n"
                    "- serviceAccount: a/b\n"
                    "- serviceAccount: shop/api.payments\n  token: long-enough-token-1234\n")
    with pytest.raises(ConfigError) as err:
        StaticTokens.from_file(path)
    problems = [str(p) for p in err.value.problems]
    bad_account = "serviceAccount: expected 'namespace/name' (DNS labels; name may be '*')"
    assert problems == [
        f"{path}: tokens[0].{bad_account}",
        f"{path}: tokens[1].token: must be a string of 16+ characters",
        f"{path}: tokens[2].sha256: expected 64 hex digits",
        f"{path}: tokens[3]: give exactly one of 'sha256' and 'token'",
        f"{path}: tokens[4].{bad_account}",
    ]


def test_a_world_readable_token_file_is_warned_about(tmp_path, caplog):
    path = tmp_path / "tokens.yaml"
    path.write_text(f"tokens:\n- serviceAccount: a/b\n  token: {TOKEN}\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, "xds_server.ca"):
        StaticTokens.from_file(path)
    assert "chmod 600" in caplog.text


def _token_file(path, *lines: tuple[str, str]) -> None:
    body = "".join(f"- serviceAccount: {sa}\n  sha256: {hash_token(tok)}\n" for sa, tok in lines)
    path.write_text(f"tokens:\n{body}")
    path.chmod(0o600)


async def test_a_token_removed_from_the_file_is_revoked_without_a_restart(tmp_path):
    path = tmp_path / "tokens.yaml"
    _token_file(path, ("default/frontend", TOKEN), ("shop/*", SHOP_TOKEN))
    service = CertificateService(CertificateAuthority.create(), StaticTokens.from_file(path),
                                 ttl=lambda: dt.timedelta(hours=1))
    server, port = await serve(("127.0.0.1", 0), SnapshotCache(), services=[service])
    address = f"127.0.0.1:{port}"
    try:
        await request_certificate(address, FRONTEND, TOKEN)
        _token_file(path, ("shop/*", SHOP_TOKEN))  # frontend's token revoked
        with pytest.raises(CertificateError) as err:
            await request_certificate(address, FRONTEND, TOKEN)
        assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
        await request_certificate(address, SpiffeId("cluster.local", "shop", "cart"),
                                  SHOP_TOKEN)
    finally:
        await server.stop(0)


def test_an_invalid_new_token_file_keeps_the_previous_tokens(tmp_path, caplog):
    path = tmp_path / "tokens.yaml"
    _token_file(path, ("default/frontend", TOKEN))
    tokens = StaticTokens.from_file(path)
    path.write_text("tokens: [oops")
    with caplog.at_level(logging.WARNING, "xds_server.ca"):
        assert tokens.authenticate(TOKEN).permits(FRONTEND)
        assert tokens.authenticate(TOKEN).permits(FRONTEND)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "keeping the previous tokens" in errors[0].getMessage()
    assert str(path) in errors[0].getMessage()
    path.unlink()  # a missing file too
    assert tokens.authenticate(TOKEN).permits(FRONTEND)
    _token_file(path, ("default/reviews", SHOP_TOKEN))  # valid again: it applies
    assert tokens.authenticate(SHOP_TOKEN).permits(REVIEWS)
    with pytest.raises(AuthenticationError):
        tokens.authenticate(TOKEN)


# ---------------------------------------------------------------- limits and bad requests


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_identity_gets_a_burst_of_certificates_then_one_per_second():
    clock = _Clock()
    results: Counter[str] = Counter()
    tokens = StaticTokens([(hash_token(TOKEN), "default/*")])
    service = CertificateService(CertificateAuthority.create(), tokens,
                                 ttl=lambda: dt.timedelta(hours=1), clock=clock,
                                 on_result=lambda r: results.update([r]))
    server, port = await serve(("127.0.0.1", 0), SnapshotCache(), services=[service])
    address = f"127.0.0.1:{port}"
    try:
        for _ in range(DEFAULT_ISSUE_BURST):
            await request_certificate(address, FRONTEND, TOKEN)
        with pytest.raises(CertificateError) as err:
            await request_certificate(address, FRONTEND, TOKEN)
        assert f"too many certificates for {FRONTEND.uri}" in str(err.value)
        assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        await request_certificate(address, REVIEWS, TOKEN)  # another identity: its own bucket
        clock.now += 1.0 / DEFAULT_ISSUE_RATE
        await request_certificate(address, FRONTEND, TOKEN)
        assert results == {"issued": DEFAULT_ISSUE_BURST + 2, "rate_limited": 1}
    finally:
        await server.stop(0)


def test_issue_buckets_forget_full_buckets_past_the_cap(monkeypatch):
    from xds_server.ca import _limits

    monkeypatch.setattr(_limits, "_MAX_BUCKETS", 3)
    clock = _Clock()
    buckets = IssueBuckets(IssueLimit(burst=2, per_second=1.0), clock=clock)
    for key in "abcd":
        assert buckets.take(key) == 0.0
    assert len(buckets._buckets) <= 3
    assert buckets.take("d") == 0.0 and buckets.take("d") == pytest.approx(1.0)


@pytest.mark.parametrize("seconds", [2**62, -1, -(2**63), MAX_VALIDITY_DURATION + 1])
async def test_an_absurd_validity_duration_is_an_invalid_argument(ca_address, seconds):
    address, _, results = ca_address
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    csr = make_key_and_csr(FRONTEND)[1].decode()
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(CREATE_CERTIFICATE,
                                   request_serializer=CertificateRequest.SerializeToString,
                                   response_deserializer=CertificateResponse.FromString)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(CertificateRequest(csr=csr, validity_duration=seconds),
                       metadata=metadata, timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (f"validity_duration must be 0 (the mesh default) or 1 "
                                   f"to {MAX_VALIDITY_DURATION} seconds, got {seconds}")
    assert results == {"bad_request": 1}
