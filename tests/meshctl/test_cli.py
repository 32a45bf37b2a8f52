"""meshctl's edges, in process: help text, usage errors, one-line failures."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from meshctl.cli import build_parser, main
from tests.xds_server.sources.source_builders import route, service

ROOT = Path(__file__).resolve().parents[2]
SUBCOMMANDS = (["control-plane"], ["check"], ["bootstrap"], ["certs"], ["certs", "issue"],
               ["demo"])


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def help_of(capsys, *argv: str) -> str:
    code, out, _ = run(capsys, *argv, "--help")
    assert code == 0
    return out


@pytest.mark.parametrize("argv", [[], *SUBCOMMANDS], ids=lambda a: " ".join(a) or "meshctl")
def test_help_is_plain_text(capsys, argv):
    text = help_of(capsys, *argv)
    assert "`" not in text and ":mod:" not in text, text


def test_control_plane_help_says_config_is_required_and_shows_defaults(capsys):
    text = " ".join(help_of(capsys, "control-plane").split())
    assert "(--config PATH | --kubernetes)" in text  # one of them, not optional
    assert "--xds-address HOST:PORT serve ADS" in text
    assert "(default: 127.0.0.1:15010)" in text
    assert "here (default: off)" in text  # --admin-address
    assert "read config from the Kubernetes API server" in text  # --kubernetes
    assert "0.0.0.0:PORT or [::]:PORT listens on all interfaces" in text


def test_defaults_are_shown_elsewhere_too(capsys):
    assert "(default: default)" in help_of(capsys, "bootstrap")  # --namespace
    text = " ".join(help_of(capsys, "certs", "issue").split())
    assert "(default: cluster.local)" in text and "(default: default)" in text
    assert "--token-file FILE" in text and "MESHLIB_TOKEN" in text
    assert "--token " not in text.replace("--token-file", "")  # no flag takes a secret


def test_control_plane_without_config_is_a_usage_error(capsys):
    code, _, err = run(capsys, "control-plane")
    assert code == 2
    assert err.startswith("usage: meshctl control-plane")
    assert "error: one of the arguments --config --kubernetes is required" in err


def test_control_plane_with_both_sources_is_a_usage_error(capsys):
    code, _, err = run(capsys, "control-plane", "--config", "x", "--kubernetes")
    assert code == 2 and "not allowed with argument" in err


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--admin-address", ":9901", ("127.0.0.1", 9901)),       # empty host: loopback
    ("--admin-address", "0.0.0.0:9901", ("0.0.0.0", 9901)),  # all interfaces, on purpose
    ("--xds-address", ":15010", ("127.0.0.1", 15010)),
    ("--xds-address", "[::]:15010", ("::", 15010)),
    ("--xds-address", "[::1]:15010", ("::1", 15010)),
])
def test_an_empty_host_means_loopback(flag, value, expected):
    args = build_parser().parse_args(["control-plane", "--config", "x", flag, value])
    assert getattr(args, flag[2:].replace("-", "_")) == expected


def test_the_xds_address_default_is_loopback():
    args = build_parser().parse_args(["control-plane", "--config", "x"])
    assert args.xds_address == ("127.0.0.1", 15010) and args.admin_address is None


def test_bootstrap_into_a_missing_directory_is_one_line(tmp_path, capsys):
    target = tmp_path / "missing" / "dir" / "b.json"
    code, out, err = run(capsys, "bootstrap", "--xds-address", "127.0.0.1:15010",
                         "--node-id", "n-1", "-o", str(target))
    assert code == 1 and out == ""
    assert err == (f"meshctl: cannot write {target}: directory {target.parent} "
                   "does not exist\n")
    assert not target.parent.exists()


def test_bootstrap_onto_a_file_as_directory_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    target = tmp_path / "file" / "b.json"
    code, _, err = run(capsys, "bootstrap", "--xds-address", "127.0.0.1:15010",
                       "--node-id", "n-1", "-o", str(target))
    assert code == 1
    assert err == f"meshctl: cannot write {target}: directory {target.parent} is not a directory\n"


def test_certs_issue_into_an_impossible_directory_fails_before_asking_the_ca(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    out_dir = tmp_path / "file" / "certs"
    token = tmp_path / "token"
    token.write_text("t" * 20)
    # Port 1: nothing listens, so reaching the CA would fail differently (and slowly).
    code, _, err = run(capsys, "certs", "issue", "--xds-address", "127.0.0.1:1",
                       "--service-account", "web", "--token-file", str(token),
                       "--out-dir", str(out_dir))
    assert code == 1
    assert err == f"meshctl: cannot write certificates to {out_dir}: not a directory\n"


@pytest.mark.parametrize("argv", [["--token", "s3cret-token-value"],
                                  ["--token=s3cret-token-value"]])
def test_certs_issue_refuses_a_token_on_the_command_line(capsys, argv):
    code, _, err = run(capsys, "certs", "issue", "--xds-address", "127.0.0.1:1",
                       "--service-account", "web", *argv, "--out-dir", "/nonexistent")
    assert code == 2
    assert "--token: pass the token with --token-file or MESHLIB_TOKEN, never on the " \
        "command line" in err
    assert "s3cret" not in err


def test_certs_issue_takes_the_token_from_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MESHLIB_TOKEN", raising=False)
    argv = ["certs", "issue", "--xds-address", "127.0.0.1:1", "--service-account", "web",
            "--out-dir", str(tmp_path / "certs")]
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert err == "meshctl: no bootstrap token: give --token-file FILE or set MESHLIB_TOKEN\n"
    monkeypatch.setenv("MESHLIB_TOKEN", "t" * 20)
    code, _, err = run(capsys, *argv)  # nothing listens on port 1: the CA is asked
    assert code == 1 and err.startswith("meshctl: no certificate:")


def test_control_plane_refuses_a_ca_directory_others_may_write(tmp_path, capsys):
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    ca_dir.chmod(0o777)
    code, _, err = run(capsys, "control-plane", "--config", str(ROOT / "examples" / "mesh"),
                       "--xds-address", "127.0.0.1:0", "--ca-dir", str(ca_dir))
    assert code == 1
    assert f"{ca_dir}: CA directory has mode 0777: group or others may write it; refusing " \
        f"to use it: chmod 700 {ca_dir}" in err
    assert err.endswith("meshctl: 1 problem(s); not started\n")  # not "in examples/mesh"
    assert not (ca_dir / "ca-key.pem").exists()


def test_check_of_an_empty_directory_is_not_ok(tmp_path, capsys):
    code, out, err = run(capsys, "check", str(tmp_path))
    assert code == 1 and "ok" not in out
    assert err == f"meshctl: {tmp_path}: no mesh objects found (*.yaml, *.yml)\n"


def test_check_of_yaml_without_objects_is_not_ok(tmp_path, capsys):
    (tmp_path / "empty.yaml").write_text("---\n# nothing yet\n---\n")
    (tmp_path / "notes.txt").write_text("kind: Service\n")
    code, _, err = run(capsys, "check", str(tmp_path))
    assert code == 1 and "no mesh objects found" in err


def test_check_of_a_missing_path_is_one_clear_problem(tmp_path, capsys):
    missing = tmp_path / "nope"
    code, out, err = run(capsys, "check", str(missing))
    assert code == 1
    assert out == f"{missing}: no such file or directory\n"
    assert "Traceback" not in err


def test_check_of_the_examples_is_still_ok(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, _ = run(capsys, "check", "examples/mesh")
    assert code == 0 and out == "examples/mesh: ok\n"


def test_check_refuses_a_route_regex_re2_refuses(tmp_path, capsys):
    objects = [service(), route("HTTPRoute", rules=[{
        "matches": [{"path": {"type": "RegularExpression", "value": "/api/(?=admin)"}}],
        "backendRefs": [{"name": "reviews", "port": 50051}]}])]
    config = tmp_path / "mesh.yaml"
    config.write_text(yaml.safe_dump_all(objects))
    code, out, _ = run(capsys, "check", str(config))
    assert code == 1
    assert out == (f"{config}: HTTPRoute default/reviews: spec.rules[0].matches[0].path.value: "
                   "must be a valid RE2 regular expression (invalid perl operator: (?=), got "
                   '"/api/(?=admin)"\n')
