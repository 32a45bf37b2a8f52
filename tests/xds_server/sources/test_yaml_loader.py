"""Reading YAML files and directories: documents, syntax errors, ConfigError."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from meshlib.errors import ConfigError
from tests.xds_server.sources.source_builders import lines
from xds_server.sources import check, load_documents, load_model, read_documents

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{name: grpc, port: 50051}}]
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_multi_document_file_skips_empty_documents(tmp_path: Path) -> None:
    file = write(
        tmp_path / "mesh.yaml",
        "---\n"
        + SERVICE.format(name="a")
        + "---\n---\n# only a comment\n---\n"
        + SERVICE.format(name="b"),
    )
    docs = load_documents(file)
    assert [(source, d["metadata"]["name"]) for source, d in docs] == [
        (str(file), "a"),
        (str(file), "b"),
    ]


def test_directory_is_read_recursively_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", SERVICE.format(name="b"))
    write(tmp_path / "a" / "z.yml", SERVICE.format(name="az"))
    write(tmp_path / "a.yaml", SERVICE.format(name="a"))
    write(tmp_path / "notes.txt", "not yaml")
    write(tmp_path / ".hidden.yaml", "{{{ not even yaml")
    write(tmp_path / ".git" / "x.yaml", "{{{ not even yaml")
    write(tmp_path / ".routes.yaml.tmp", "{{{ not even yaml")
    docs = load_documents(tmp_path)
    assert [Path(source).relative_to(tmp_path).as_posix() for source, _ in docs] == [
        "a/z.yml",
        "a.yaml",
        "b.yaml",
    ]
    assert [s.name for s in load_model(tmp_path).services] == ["a", "az", "b"]


def test_empty_directory_is_an_empty_mesh(tmp_path: Path) -> None:
    assert check(tmp_path) == []
    assert load_model(tmp_path).services == ()


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert lines(check(missing)) == [f"{missing}: no such file or directory"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """\
            apiVersion: v1
            kind: Service
            metadata:
              name: a
               namespace: b
            """,
            "YAML syntax error at line 5, column 13: mapping values are not allowed here",
        ),
        (
            """\
            apiVersion: v1
            kind: Service
            spec:
              ports: [{name: grpc, port: 50051}
            """,
            "YAML syntax error at line 5, column 1: expected ',' or ']', but got '<stream end>' "
            "(while parsing a flow sequence at line 4)",
        ),
        (
            """\
            apiVersion: v1
            kind: Service
            metadata:
              name: "unterminated
            """,
            "YAML syntax error at line 5, column 1: found unexpected end of stream "
            "(while scanning a quoted scalar at line 4)",
        ),
        (
            """\
            key: value
            \tindented: with a tab
            """,
            "YAML syntax error at line 2, column 1: found character '\\t' that cannot start "
            "any token (while scanning for the next token)",
        ),
    ],
)
def test_syntax_errors_name_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    file = write(tmp_path / "bad.yaml", text)
    assert lines(check(file)) == [f"{file}: {expected}"]


def test_documents_before_a_syntax_error_are_kept(tmp_path: Path) -> None:
    file = write(tmp_path / "mesh.yaml", SERVICE.format(name="a") + "---\nkey: [\n")
    docs, problems = read_documents(file)
    assert [d["metadata"]["name"] for _, d in docs] == ["a"]
    assert len(problems) == 1


def test_duplicate_keys_are_reported(tmp_path: Path) -> None:
    file = write(
        tmp_path / "mesh.yaml",
        """\
        apiVersion: v1
        kind: Service
        metadata:
          name: a
          name: b
        spec:
          ports: [{name: grpc, port: 1, port: 2}]
        """,
    )
    assert lines(check(file)) == [
        f'{file}: duplicate key "name" at line 5',
        f'{file}: duplicate key "port" at line 7',
    ]


def test_a_document_that_is_not_an_object(tmp_path: Path) -> None:
    file = write(tmp_path / "mesh.yaml", SERVICE.format(name="a") + "---\n- a\n- b\n")
    assert lines(check(file)) == [
        f"{file}: document 2 (line 7) must be a Kubernetes object with apiVersion and kind, "
        "got a list"
    ]


def test_load_model_raises_config_error_with_every_problem(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "key: [\n")
    write(tmp_path / "b.yaml", SERVICE.format(name="Bad_Name"))
    write(tmp_path / "c.yaml", SERVICE.format(name="c").replace("port: 50051", "port: 0"))
    with pytest.raises(ConfigError) as caught:
        load_model(tmp_path)
    assert [p.source for p in caught.value.problems] == [
        str(tmp_path / "a.yaml"),
        str(tmp_path / "b.yaml"),
        str(tmp_path / "c.yaml"),
    ]
    assert str(caught.value).startswith("3 configuration problem(s):\n")
    with pytest.raises(ConfigError):
        load_documents(tmp_path)  # the YAML problem alone is enough


def test_unquoted_timestamps_and_bom_are_fine(tmp_path: Path) -> None:
    file = tmp_path / "mesh.yaml"
    text = SERVICE.format(name="a").replace(
        "metadata: {name: a}", "metadata: {name: a, creationTimestamp: 2024-01-01T00:00:00Z}"
    )
    file.write_text("\ufeff" + text, encoding="utf-8")
    assert load_model(file).services[0].name == "a"
