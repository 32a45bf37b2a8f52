"""Order problems as a reader meets them: by file, by object, by field in the document.

Parsers find problems in their own order (unknown fields when a mapping is first
seen, references at the end); ``meshctl check`` should print them as the user reads
the file instead: file by file, object by object, and within an object in the order
of the fields in the document (``spec.rules[0]...`` before ``spec.rules[1]...``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from meshlib.contract import Problem

__all__ = ["ProblemOrder", "document_position"]

_SEGMENT = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]")


def document_position(obj: Any, path: str) -> tuple[int, ...]:
    """Where field ``path`` (``spec.rules[1].name``) sits in ``obj``, as a sort key.

    Each step is the key's position in its mapping or the list index. A missing key
    (a required field left out) sorts after its siblings.
    """
    node = obj
    position: list[int] = []
    for match in _SEGMENT.finditer(path):
        key = match.group(1) if match.group(1) is not None else match.group(2)
        if isinstance(node, list) and key.isdigit():
            index = int(key)
            position.append(index)
            node = node[index] if index < len(node) else None
        elif isinstance(node, Mapping):
            keys = list(node)
            position.append(keys.index(key) if key in node else len(keys))
            node = node.get(key)
        else:
            position.append(0)
            node = None
    return tuple(position)


class ProblemOrder:
    """Remembers where sources and objects first appear, and sorts problems by that."""

    def __init__(self) -> None:
        self._sources: dict[str, int] = {}
        self._objects: dict[tuple[str, str], tuple[int, Any]] = {}

    def register(self, source: str, obj: str, raw: Any) -> None:
        """Note object ``obj`` (its label) from ``source``, with its raw content."""
        self._sources.setdefault(source, len(self._sources))
        self._objects.setdefault((source, obj), (len(self._objects), raw))

    def sorted(self, problems: Iterable[Problem]) -> list[Problem]:
        """``problems`` by file, object and field position; otherwise as found."""

        def key(item: tuple[int, Problem]) -> tuple[int, int, tuple[int, ...], int]:
            seq, problem = item
            source = self._sources.get(problem.source, len(self._sources))
            index, raw = self._objects.get((problem.source, problem.obj), (-1, None))
            position = document_position(raw, problem.field) if raw is not None else ()
            return (source, index, position, seq)

        return [p for _, p in sorted(enumerate(problems), key=key)]
