"""Workload certificates: PEM checks, the refresh schedule, rotation from the CA, and
mounted files followed on change."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import shutil
import threading
import time

import grpc
import pytest

import meshlib
from meshlib.contract import SpiffeId
from meshlib.security._certificates import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    CertificateError,
    FileCertificates,
    IssuedCertificates,
    WorkloadCertificate,
    make_key_and_csr,
    request_certificate,
    write_files,
)
from xds_server.ca import (
    CertificateAuthority,
    CertificateService,
    IssueLimit,
    StaticTokens,
    hash_token,
)
from xds_server.cache import SnapshotCache
from xds_server.server import serve

FRONTEND = SpiffeId("cluster.local", "default", "frontend")
TOKEN = "frontend-token-0123456789"


def issue(ca: CertificateAuthority, identity: SpiffeId = FRONTEND,
          ttl: dt.timedelta = dt.timedelta(hours=1)) -> WorkloadCertificate:
    key_pem, csr_pem = make_key_and_csr(identity)
    issued = ca.issue(csr_pem, identity, ttl=ttl)
    return WorkloadCertificate.from_pem(key_pem, issued.cert_pem, ca.roots_pem())


def test_from_pem_describes_the_leaf():
    ca = CertificateAuthority.create()
    cert = issue(ca)
    assert cert.spiffe_id == FRONTEND
    assert cert.not_after - cert.not_before > dt.timedelta(minutes=59)
    assert not cert.expired()


def test_from_pem_refuses_a_key_for_another_certificate():
    ca = CertificateAuthority.create()
    a, b = issue(ca), issue(ca)
    with pytest.raises(CertificateError, match="does not match"):
        WorkloadCertificate.from_pem(a.key_pem, b.chain_pem, a.roots_pem)
    with pytest.raises(CertificateError, match="unreadable"):
        WorkloadCertificate.from_pem(b"junk", b.chain_pem, a.roots_pem)


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 0.45), (0.5, 0.5), (1.0, 0.55)])
def test_refresh_is_at_half_the_remaining_lifetime_jittered(draw, expected):
    cert = issue(CertificateAuthority.create())
    now = cert.not_after - dt.timedelta(seconds=100)
    assert cert.refresh_delay(now, rng=lambda: draw) == pytest.approx(100 * expected)
    assert cert.refresh_delay(cert.not_after + dt.timedelta(seconds=1)) == 0.0


async def test_issued_certificates_rotate_with_a_new_key_and_serial():
    ca = CertificateAuthority.create()
    service = CertificateService(ca, StaticTokens([(hash_token(TOKEN), "default/frontend")]),
                                 ttl=lambda: dt.timedelta(hours=1))
    server, port = await serve(("127.0.0.1", 0), SnapshotCache(), services=[service])
    try:
        source = IssuedCertificates(f"127.0.0.1:{port}", FRONTEND, token=TOKEN, ttl=2)
        seen: list[WorkloadCertificate] = []
        source.subscribe(seen.append)
        task = asyncio.create_task(source.run())
        deadline = asyncio.get_running_loop().time() + 5
        while len(seen) < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()
        assert len(seen) >= 3, "expected a first certificate and two rotations in 5 s"
        assert len({c.serial for c in seen}) == len(seen)
        assert len({c.key_pem for c in seen}) == len(seen)
        assert source.rotations == len(seen) - 1
        # each was replaced before it expired
        for old, new in itertools.pairwise(seen):
            assert new.not_before <= old.not_after
    finally:
        await server.stop(0)


async def test_a_refused_token_is_a_clear_error():
    ca = CertificateAuthority.create()
    service = CertificateService(ca, StaticTokens([]), ttl=lambda: dt.timedelta(hours=1))
    server, port = await serve(("127.0.0.1", 0), SnapshotCache(), services=[service])
    try:
        source = IssuedCertificates(f"127.0.0.1:{port}", FRONTEND, token="nobody-knows-this")
        with pytest.raises(CertificateError, match="UNAUTHENTICATED") as err:
            await source.fetch()
        assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
        assert source.current is None
    finally:
        await server.stop(0)


async def test_token_file_is_read_at_each_request(tmp_path):
    ca = CertificateAuthority.create()
    service = CertificateService(ca, StaticTokens([(hash_token(TOKEN), "default/frontend")]),
                                 ttl=lambda: dt.timedelta(hours=1))
    server, port = await serve(("127.0.0.1", 0), SnapshotCache(), services=[service])
    token_file = tmp_path / "token"
    token_file.write_text("stale-token-000000000\n")
    try:
        source = IssuedCertificates(f"127.0.0.1:{port}", FRONTEND, token_file=token_file)
        with pytest.raises(CertificateError):
            await source.fetch()
        token_file.write_text(TOKEN + "\n")  # the kubelet rotated the projected token
        assert (await source.fetch()).spiffe_id == FRONTEND
    finally:
        await server.stop(0)


async def test_mounted_files_are_followed(tmp_path):
    ca = CertificateAuthority.create()
    first, second = issue(ca), issue(ca)
    write_files(tmp_path / "certs", first)
    source = FileCertificates(tmp_path / "certs")
    seen: list[int] = []
    source.subscribe(lambda c: seen.append(c.serial))
    task = asyncio.create_task(source.run())
    try:
        await asyncio.sleep(0.3)
        assert seen == [first.serial]
        # Kubernetes swaps a whole directory; write elsewhere and move into place.
        write_files(tmp_path / "next", second)
        for name in (KEY_FILE, CERT_FILE, CA_FILE):
            shutil.move(tmp_path / "next" / name, tmp_path / "certs" / name)
        deadline = asyncio.get_running_loop().time() + 5
        while seen[-1] != second.serial and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert seen[-1] == second.serial
    finally:
        task.cancel()


def test_written_key_is_private(tmp_path):
    write_files(tmp_path, issue(CertificateAuthority.create()))
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert FileCertificates(tmp_path).load().spiffe_id == FRONTEND


def test_files_planted_at_the_old_temporary_names_change_nothing(tmp_path):
    certs, outside = tmp_path / "certs", tmp_path / "outside"
    certs.mkdir()
    outside.write_bytes(b"the attacker's file\n")
    outside.chmod(0o644)
    (certs / f".{KEY_FILE}.tmp").write_bytes(b"planted")  # once a fixed temporary name
    (certs / f".{KEY_FILE}.tmp").chmod(0o644)
    (certs / f".{CERT_FILE}.tmp").symlink_to(outside)
    (certs / f".{CA_FILE}.tmp").symlink_to(outside)
    cert = issue(CertificateAuthority.create())
    write_files(certs, cert)
    assert (certs / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert not (certs / KEY_FILE).is_symlink() and not (certs / CERT_FILE).is_symlink()
    assert (certs / KEY_FILE).read_bytes() == cert.key_pem
    assert outside.read_bytes() == b"the attacker's file\n"
    assert outside.stat().st_mode & 0o777 == 0o644
    assert FileCertificates(certs).load().serial == cert.serial
    assert sorted(p.name for p in certs.iterdir() if not p.name.endswith(".tmp")) == \
        sorted([KEY_FILE, CERT_FILE, CA_FILE])


def test_missing_files_are_a_clear_error(tmp_path):
    with pytest.raises(CertificateError, match="cannot read certificates in"):
        FileCertificates(tmp_path).load()


@pytest.mark.parametrize("ttl", [float("nan"), float("inf"), -1.0, 0.5, 2.0**62])
async def test_a_ttl_out_of_range_is_a_clear_error_before_asking(ttl):
    # Port 1: nothing listens; the error must come before any connection.
    with pytest.raises(CertificateError, match="certificate TTL must be 1 to") as err:
        await request_certificate("127.0.0.1:1", FRONTEND, TOKEN, ttl=ttl)
    assert err.value.code is None


def test_a_mesh_the_ca_rate_limits_starts_and_gets_its_certificate_soon():
    """Many replicas of one service account starting at once: the CA answers
    RESOURCE_EXHAUSTED to some; they wait and retry instead of failing to start."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    service = CertificateService(
        CertificateAuthority.create(), StaticTokens([(hash_token(TOKEN), "default/frontend")]),
        ttl=lambda: dt.timedelta(hours=1), issue_limit=IssueLimit(burst=1, per_second=1.0))

    async def start():
        return await serve(("127.0.0.1", 0), SnapshotCache(), services=[service])

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    address = f"127.0.0.1:{port}"
    mesh = None
    try:
        asyncio.run_coroutine_threadsafe(  # the one certificate of the burst
            request_certificate(address, FRONTEND, TOKEN), loop).result(10)
        mesh = meshlib.Mesh(address, node_id="frontend-2", service="frontend", token=TOKEN)
        deadline = time.monotonic() + 10
        while mesh.certificates.current is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mesh.certificates.current is not None
        assert mesh.certificates.current.spiffe_id == FRONTEND
    finally:
        if mesh is not None:
            mesh.close()
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
