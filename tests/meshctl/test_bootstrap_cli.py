"""`meshctl bootstrap`: native gRPC's and Envoy's (--envoy), the files it writes, and
what it says about combinations that cannot work against a secure control plane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.meshctl.test_cli import run

XDS = ("--xds-address", "127.0.0.1:15010", "--node-id", "n-1")


def test_a_root_without_a_cert_dir_warns_that_the_xds_port_will_refuse_it(capsys):
    code, out, err = run(capsys, "bootstrap", *XDS, "--ca-root", "root.pem")
    assert code == 0 and json.loads(out)["xds_servers"][0]["channel_creds"][0]["type"] == "tls"
    assert err.startswith("meshctl: warning: --ca-root without --cert-dir: no client "
                          "certificate on the xDS channel")
    assert "--cert-dir DIR" in err and err.count("\n") == 1


def test_a_root_and_a_cert_dir_say_nothing_and_use_absolute_paths(capsys, tmp_path,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "bootstrap", *XDS, "--ca-root", "root.pem",
                         "--cert-dir", "certs")
    assert (code, err) == (0, "")
    config = json.loads(out)["xds_servers"][0]["channel_creds"][0]["config"]
    assert config["ca_certificate_file"] == str(tmp_path / "root.pem")
    assert config["certificate_file"] == str(tmp_path / "certs" / "cert.pem")
    assert config["private_key_file"] == str(tmp_path / "certs" / "key.pem")


@pytest.mark.parametrize("flags", [
    ["--delta"], ["--xds-name", "cp.example"], ["--admin-port", "9901"],
    ["--outbound-port", "15001"]], ids=lambda f: f[0])
def test_envoy_flags_without_envoy_are_a_usage_error(capsys, flags):
    code, out, err = run(capsys, "bootstrap", *XDS, *flags)
    assert (code, out) == (2, "")
    assert err == (f"meshctl bootstrap: {flags[0]}: for an Envoy bootstrap only "
                   "(add --envoy)\n")


def test_envoy_cert_dir_without_a_root_is_a_usage_error(capsys, tmp_path):
    code, _, err = run(capsys, "bootstrap", "--envoy", *XDS, "--cert-dir", "certs",
                       "-o", str(tmp_path / "e.json"))
    assert code == 2 and "give --ca-root FILE too" in err


def test_envoy_tls_needs_an_output_file_for_its_sds_files(capsys):
    code, out, err = run(capsys, "bootstrap", "--envoy", *XDS, "--ca-root", "root.pem",
                         "--cert-dir", "certs")
    assert (code, out) == (2, "")
    assert "SDS files written beside the bootstrap: give --output FILE" in err


def test_envoy_plaintext_goes_to_stdout(capsys):
    code, out, err = run(capsys, "bootstrap", "--envoy", *XDS, "--admin-port", "9901")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["admin"]["address"]["socket_address"] == {"address": "127.0.0.1",
                                                         "port_value": 9901}
    assert "transport_socket" not in doc["static_resources"]["clusters"][0]


def test_envoy_mtls_writes_the_bootstrap_and_its_sds_files_beside_it(capsys, tmp_path):
    output = tmp_path / "envoy.json"
    code, out, err = run(capsys, "bootstrap", "--envoy", *XDS, "--ca-root",
                         str(tmp_path / "root.pem"), "--cert-dir", str(tmp_path / "certs"),
                         "--xds-name", "cp.example", "-o", str(output))
    assert (code, out, err) == (0, "", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "envoy-xds-cert.json", "envoy-xds-roots.json", "envoy.json"]
    tls = json.loads(output.read_text())["static_resources"]["clusters"][0][
        "transport_socket"]["typed_config"]
    assert tls["sni"] == "cp.example"
    named = [c["sds_config"]["path_config_source"]["path"] for c in
             tls["common_tls_context"]["tls_certificate_sds_secret_configs"]]
    assert named == [str(tmp_path / "envoy-xds-cert.json")]
    secret = json.loads((tmp_path / "envoy-xds-cert.json").read_text())["resources"][0]
    assert secret["tls_certificate"]["private_key"] == {
        "filename": str(Path(tmp_path / "certs" / "key.pem"))}
