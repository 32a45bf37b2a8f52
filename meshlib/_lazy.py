"""Lazy public names for meshlib's packages: import what a call path needs when it
is first used (PEP 562, in the spirit of Scientific Python's SPEC 1 / lazy_loader).

A package ``__init__`` imports its public names under ``if TYPE_CHECKING:`` (so type
checkers, IDEs and linters see them, with their types) and lists them in
``__all__``; :func:`lazy_exports` reads that block once and imports a name's module
when the name is first used. So ``import meshlib`` does not pay for grpc.aio,
certificates, OpenTelemetry or the xDS protos: a process imports them when
something it does needs them.

Example, in a package ``__init__``::

    from typing import TYPE_CHECKING

    from meshlib._lazy import lazy_exports

    if TYPE_CHECKING:
        from meshlib.security._admission import Admission

    __all__ = ["Admission"]
    __getattr__, __dir__ = lazy_exports(__name__, __file__)
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def _where(package: str, path: str) -> dict[str, str]:
    """Name → module, from the ``if TYPE_CHECKING:`` imports of ``path``."""
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read(), path)
    found: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Name)
                and node.test.id == "TYPE_CHECKING"):
            continue
        for statement in node.body:
            if isinstance(statement, ast.ImportFrom):
                module = "." * statement.level + (statement.module or "")
                if statement.level:
                    module = importlib.util.resolve_name(module, package)
                for alias in statement.names:
                    found[alias.asname or alias.name] = module
    return found


def lazy_exports(package: str, path: str
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` (its ``__init__`` at
    ``path``): each name imported under ``if TYPE_CHECKING:`` there is imported from
    its module on first use, then kept as a plain attribute."""
    where: dict[str, str] | None = None

    def __getattr__(name: str) -> Any:
        nonlocal where
        if where is None:
            where = _where(package, path)
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # the next access is a plain attribute
        return value

    def __dir__() -> list[str]:
        names = set(vars(sys.modules[package]))
        names.update(_where(package, path) if where is None else where)
        return sorted(names)

    return __getattr__, __dir__
