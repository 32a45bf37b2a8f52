"""Mesh.from_env and Mesh's own argument checks (no control plane needed)."""

from __future__ import annotations

import json
import time

import grpc
import pytest

import meshlib


def test_from_env_reads_the_documented_variables(tmp_path):
    mesh = meshlib.Mesh.from_env({
        "MESHLIB_XDS_ADDRESS": "127.0.0.1:1", "MESHLIB_NODE_ID": "n-1",
        "MESHLIB_SERVICE": "frontend", "POD_NAMESPACE": "shop",
        "MESHLIB_XDS_PROTOCOL": "sotw", "MESHLIB_RESOLVE_TIMEOUT": "0.2",
        "MESHLIB_XDS_CACHE": str(tmp_path / "cache.json"),
    })
    try:
        assert (mesh.xds_address, mesh.node_id, mesh.service, mesh.namespace) == (
            "127.0.0.1:1", "n-1", "frontend", "shop")
        assert mesh.resolve_timeout == 0.2
        assert mesh.settings.xds_protocol == "sotw"
        # Nothing answers at that address: the first call fails once the ADS stream
        # does (at most resolve_timeout), naming the control plane it could not reach.
        with pytest.raises(meshlib.NoHealthyEndpointError, match=r"127\.0\.0\.1:1") as info:
            mesh.channel("reviews").unary_unary("/demo.Reviews/Get")(b"")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        mesh.close()


def test_from_env_falls_back_to_the_grpc_bootstrap(tmp_path):
    bootstrap = tmp_path / "bootstrap.json"
    bootstrap.write_text(json.dumps({"xds_servers": [{"server_uri": "10.0.0.9:15010"}],
                                     "node": {"id": "boot-node"}}))
    mesh = meshlib.Mesh.from_env({"GRPC_XDS_BOOTSTRAP": str(bootstrap)})
    try:
        assert (mesh.xds_address, mesh.node_id, mesh.namespace) == (
            "10.0.0.9:15010", "boot-node", "default")
    finally:
        mesh.close()


def test_from_env_errors_are_clear():
    with pytest.raises(meshlib.MeshError, match="MESHLIB_XDS_ADDRESS"):
        meshlib.Mesh.from_env({})
    with pytest.raises(meshlib.MeshError, match="MESHLIB_XDS_PROTOCOL"):
        meshlib.Mesh.from_env({"MESHLIB_XDS_ADDRESS": "x:1", "MESHLIB_XDS_PROTOCOL": "v2"})
    with pytest.raises(meshlib.MeshError, match="xds_address"):
        meshlib.Mesh(xds_address="")


def test_closed_mesh_refuses_new_channels():
    mesh = meshlib.Mesh(xds_address="127.0.0.1:1")
    with mesh:
        pass
    with pytest.raises(meshlib.MeshError, match="closed"):
        mesh.channel("reviews")


def test_from_env_reads_the_identity_variables(tmp_path):
    from meshlib.security._certificates import WorkloadCertificate, make_key_and_csr, write_files
    from xds_server.ca import CertificateAuthority

    ca = CertificateAuthority.create(trust_domain="example.org")
    identity = meshlib.SpiffeId("example.org", "shop", "cart")
    key, csr = make_key_and_csr(identity)
    write_files(tmp_path, WorkloadCertificate.from_pem(key, ca.issue(csr, identity).cert_pem,
                                                       ca.roots_pem()))
    mesh = meshlib.Mesh.from_env({
        "MESHLIB_XDS_ADDRESS": "127.0.0.1:1", "MESHLIB_SERVICE": "cart",
        "POD_NAMESPACE": "shop", "MESHLIB_CERT_DIR": str(tmp_path),
        "MESHLIB_TRUST_DOMAIN": "example.org", "MESHLIB_RESOLVE_TIMEOUT": "0.2"})
    try:
        assert mesh.identity == identity
        assert mesh.certificates is not None and mesh.certificates.current is not None
    finally:
        mesh.close()
    with pytest.raises(meshlib.MeshError, match="MESHLIB_CERT_TTL must be a number"):
        meshlib.Mesh.from_env({"MESHLIB_XDS_ADDRESS": "127.0.0.1:1", "MESHLIB_CERT_TTL": "1d"})


def test_a_missing_cert_dir_is_a_clear_error(tmp_path):
    with pytest.raises(meshlib.CertificateError, match="cannot read certificates in"):
        meshlib.Mesh("127.0.0.1:1", service="cart", cert_dir=str(tmp_path / "none"),
                     resolve_timeout=0.2)


def test_close_is_prompt_while_the_stream_keeps_failing():
    # grpc.aio can turn close()'s cancellation of the ADS stream into a CANCELLED
    # status; the client then used to sleep its reconnect backoff (close: 5 s timeout).
    for _ in range(8):
        mesh = meshlib.Mesh(xds_address="127.0.0.1:1", resolve_timeout=0.1)
        started = time.monotonic()
        mesh.close()
        assert time.monotonic() - started < 1.0
