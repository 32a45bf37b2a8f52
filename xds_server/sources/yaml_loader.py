"""Read mesh config from YAML files: one file, or a directory of them.

A directory is read recursively: every ``*.yaml`` and ``*.yml`` file, in sorted path
order, skipping hidden files and directories (editor and ``kubectl`` temp files).
A file may hold several documents (``---``); empty documents are skipped. YAML
errors, including duplicate keys (which ``kubectl`` rejects), become problems
with the file and line.

Example::

    model = load_model("examples/mesh")     # raises ConfigError listing every problem
    for problem in check("examples/invalid"):
        print(problem)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from meshlib.contract import ConfigError, Problem
from xds_server.model import MeshModel
from xds_server.sources.fields import describe, quote
from xds_server.sources.parse import ParseMemo, parse_objects

__all__ = [
    "YAML_SUFFIXES",
    "ConfigLoader",
    "check",
    "load_documents",
    "load_model",
    "read_documents",
]

YAML_SUFFIXES = (".yaml", ".yml")


class _DuplicateKeys:
    """Mixin for a safe loader: note duplicate mapping keys instead of keeping the last."""

    duplicates: list[tuple[int, str]]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    self.duplicates.append((key_node.start_mark.line + 1, key_node.value))
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc]


class _PyLoader(_DuplicateKeys, yaml.SafeLoader):
    """Pure Python: slower, with the clearer syntax error messages."""


# libyaml's parser when available (several times faster); its error messages differ,
# so a file with a syntax error is read again by _PyLoader to report it.
_FastLoader: type[yaml.SafeLoader] = _PyLoader
if hasattr(yaml, "CSafeLoader"):

    class _CLoader(_DuplicateKeys, yaml.CSafeLoader):  # type: ignore[misc, name-defined]
        """libyaml's parser with the duplicate-key check."""

    _FastLoader = _CLoader


def yaml_files(path: Path) -> list[Path]:
    """The YAML files under ``path`` (a file or a directory), sorted."""
    if not path.is_dir():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.suffix in YAML_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


_Documents = list[tuple[str, dict[str, Any]]]


def _read_file(
    file: Path,
    cache: dict[str, tuple[bytes, _Documents, list[Problem]]] | None = None,
    fresh: dict[str, bytes] | None = None,
) -> tuple[_Documents, list[Problem]]:
    """The documents of ``file``; with a ``cache``, parsed again only if its bytes changed.

    The cache is keyed by a digest of the content, not by mtime: two writes within
    one timestamp tick must not hide a change.
    """
    source = str(file)
    try:
        raw = fresh.pop(source) if fresh and source in fresh else file.read_bytes()
        digest = hashlib.blake2b(raw, digest_size=16).digest()
        if cache is not None and source in cache and cache[source][0] == digest:
            return cache[source][1], cache[source][2]
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return [], [Problem(source=source, message=f"cannot read: {reason}")]
    documents, problems = _parse_text(source, text)
    if cache is not None:
        cache[source] = (digest, documents, problems)
    return documents, problems


def _parse_text(source: str, text: str) -> tuple[_Documents, list[Problem]]:
    documents, problems, failed = _parse_yaml(source, text, _FastLoader)
    if failed and _FastLoader is not _PyLoader:
        documents, problems, _ = _parse_yaml(source, text, _PyLoader)
    return documents, problems


def _parse_yaml(
    source: str, text: str, loader_class: type[yaml.SafeLoader]
) -> tuple[list[tuple[str, dict[str, Any]]], list[Problem], bool]:
    """The documents of ``text``, the problems, and whether YAML syntax failed."""
    documents: list[tuple[str, dict[str, Any]]] = []
    problems: list[Problem] = []
    failed = False
    loader = loader_class(text)
    loader.duplicates = []  # type: ignore[attr-defined]
    try:
        number = 0
        while loader.check_node():
            node = loader.get_node()
            number += 1
            data = loader.construct_document(node)
            if data is None:
                continue  # an empty document
            if isinstance(data, dict):
                documents.append((source, data))
            else:
                line = node.start_mark.line + 1
                problems.append(
                    Problem(
                        source=source,
                        message=f"document {number} (line {line}) must be a Kubernetes "
                        f"object with apiVersion and kind, got {describe(data)}",
                    )
                )
    except yaml.MarkedYAMLError as exc:
        failed = True
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context:
            context = exc.context
            if exc.context_mark and exc.context_mark is not mark:
                context += f" at line {exc.context_mark.line + 1}"
            what += f" ({context})"
        problems.append(Problem(source=source, message=f"YAML syntax error{where}: {what}"))
    except yaml.YAMLError as exc:
        failed = True
        problems.append(Problem(source=source, message=f"YAML error: {exc}"))
    finally:
        loader.dispose()
    for line, key in loader.duplicates:  # type: ignore[attr-defined]
        problems.append(
            Problem(source=source, message=f"duplicate key {quote(key)} at line {line}")
        )
    return documents, problems, failed


def read_documents(path: str | Path) -> tuple[list[tuple[str, dict[str, Any]]], list[Problem]]:
    """Every document under ``path`` as ``(file, object)``, and the YAML problems found.

    Documents that come before a syntax error in a file are still returned.
    """
    return _read_all(Path(path), None)


def _read_all(
    path: Path,
    cache: dict[str, tuple[bytes, _Documents, list[Problem]]] | None,
    fresh: dict[str, bytes] | None = None,
) -> tuple[_Documents, list[Problem]]:
    if not path.exists():
        return [], [Problem(source=str(path), message="no such file or directory")]
    documents: _Documents = []
    problems: list[Problem] = []
    files = yaml_files(path)
    for file in files:
        docs, file_problems = _read_file(file, cache, fresh)
        documents += docs
        problems += file_problems
    if cache is not None:  # forget files that are gone
        for gone in set(cache) - {str(f) for f in files}:
            del cache[gone]
    return documents, problems


class ConfigLoader:
    """Loads the config under ``path`` again and again, re-parsing only what changed.

    A file whose bytes are unchanged is not parsed again, and its objects are not
    validated again: the model it yields holds the very same objects as before, so
    translation can skip everything that did not change. Results equal
    :func:`load_model`'s.

    Example::

        loader = ConfigLoader("examples/mesh")
        model = loader.load()        # ConfigError if invalid
        ...                          # a file changes
        model = loader.load()        # only that file is parsed
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._files: dict[str, tuple[bytes, _Documents, list[Problem]]] = {}
        self._memo = ParseMemo()
        self._loaded = False
        self._fresh: dict[str, bytes] = {}  # bytes changed() read, for load() to reuse

    def changed(self) -> bool:
        """Whether the YAML under ``path`` differs from what was last loaded.

        Reads and hashes the files (milliseconds for megabytes); parses nothing. The
        bytes read are kept for the :meth:`load` that usually follows.
        """
        self._fresh = {}
        if not self.path.exists():
            return bool(self._files) or not self._loaded
        files = {str(f) for f in yaml_files(self.path)}
        changed = files != set(self._files)
        for source in files:
            try:
                raw = Path(source).read_bytes()
            except OSError:
                return True
            self._fresh[source] = raw
            known = self._files.get(source)
            if known is None or hashlib.blake2b(raw, digest_size=16).digest() != known[0]:
                changed = True
        return changed

    def load(self) -> MeshModel:
        """The current model; raises :class:`~meshlib.contract.ConfigError` if invalid."""
        self._loaded = True
        documents, problems = _read_all(self.path, self._files, self._fresh)
        self._fresh = {}
        model, parse_problems = parse_objects(documents, memo=self._memo)
        problems = problems + parse_problems
        if problems:
            raise ConfigError(_by_file(self.path, problems))
        return model


def load_documents(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """Every document under ``path`` (a YAML file or a directory) as ``(file, object)``.

    Raises :class:`~meshlib.contract.ConfigError` listing every YAML problem found.
    """
    documents, problems = read_documents(path)
    if problems:
        raise ConfigError(problems)
    return documents


def check(path: str | Path) -> list[Problem]:
    """Every problem in the config under ``path``: YAML, objects and references."""
    documents, problems = read_documents(path)
    _, parse_problems = parse_objects(documents)
    return _by_file(path, problems + parse_problems)


def load_model(path: str | Path) -> MeshModel:
    """The model of the config under ``path``.

    Raises :class:`~meshlib.contract.ConfigError` listing every problem (YAML, objects
    and references) if there is any.
    """
    return ConfigLoader(path).load()


def _by_file(path: str | Path, problems: list[Problem]) -> list[Problem]:
    """Grouped by file in reading order; within a file YAML problems come first."""
    files = {str(f): i for i, f in enumerate(yaml_files(Path(path)))}
    return sorted(problems, key=lambda p: files.get(p.source, -1))
