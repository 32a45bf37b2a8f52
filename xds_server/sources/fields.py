"""Typed reading of one object's fields, reporting every problem with its path.

Parsers read a Kubernetes object through :class:`Fields` views. A wrong type, a bad
value or a missing required field becomes a :class:`~meshlib.contract.Problem` naming
the file, the object and the field path (``spec.rules[0].backendRefs[1].weight``);
the getter then returns its default so parsing goes on and *every* problem is found.

Two kinds of problem:

* :meth:`ObjectContext.error` — the value is invalid; the object is left out of the
  model (as the API server would reject it).
* :meth:`ObjectContext.warn` — reported, but the object is still usable (an unknown
  field, which the API server would prune, or a dangling reference, which the
  Gateway API answers with errors at request time).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from meshlib.contract import Problem
from xds_server.sources.durations import parse_duration

__all__ = [
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "Check",
    "Fields",
    "ObjectContext",
    "ReferenceRole",
    "ServiceReference",
    "describe",
    "one_of",
    "pattern",
    "quote",
]

T = TypeVar("T")

#: Which kind of reference a :class:`ServiceReference` is, to word its problems.
ReferenceRole = Literal["backendRef", "parentRef", "targetRef", "EndpointSlice"]

#: A value check: ``None`` when fine, else the problem message.
Check = Callable[[str], str | None]

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)


def quote(value: object) -> str:
    """``value`` as it would appear in JSON: ``"text"``, ``5``, ``true``."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def describe(value: object) -> str:
    """A short description of a YAML/JSON value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {quote(value)}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {quote(value)}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__  # e.g. a YAML timestamp


def _did_you_mean(value: str, options: Collection[str]) -> str:
    by_lower = {o.lower(): o for o in options}
    if value.lower() in by_lower:
        return f' (did you mean "{by_lower[value.lower()]}"?)'
    close = difflib.get_close_matches(value.lower(), list(by_lower), n=1, cutoff=0.75)
    return f' (did you mean "{by_lower[close[0]]}"?)' if close else ""


def _unknown_hint(key: str, allowed: Collection[str]) -> str:
    hint = _did_you_mean(key, allowed)
    if hint or len(allowed) > 8:
        return hint
    return f" (known fields: {', '.join(sorted(allowed))})"


def one_of(choices: Collection[str]) -> Check:
    """A check that the value is one of ``choices`` (case-sensitive, with a hint)."""

    def check(value: str) -> str | None:
        if value in choices:
            return None
        hint = _did_you_mean(value, choices)
        if len(choices) == 1:
            return f"must be {quote(next(iter(choices)))}, got {quote(value)}"
        if hint and len(choices) > 5:  # the hint says more than a long list
            return f"unknown value {quote(value)}{hint}"
        return f"must be one of {', '.join(choices)}; got {quote(value)}{hint}"

    return check


def pattern(regex: re.Pattern[str] | str, expected: str) -> Check:
    """A check that the whole value matches ``regex``; ``expected`` says what it should be."""
    compiled = re.compile(regex) if isinstance(regex, str) else regex

    def check(value: str) -> str | None:
        return None if compiled.fullmatch(value) else f"must be {expected}, got {quote(value)}"

    return check


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceReference:
    """A reference to a Service seen while parsing, resolved once every object is known.

    ``ports`` lists ``(field path, port)`` pairs that must exist on the Service: a port
    number (routes) or a port name (EndpointSlice ports; ``""`` for an unnamed port).
    ``role`` words the problem: ``backendRef``, ``parentRef``, ``targetRef`` or
    ``EndpointSlice``.
    """

    source: str
    obj: str
    field: str
    role: ReferenceRole
    namespace: str
    name: str
    ports: tuple[tuple[str, int | str], ...] = ()


class ObjectContext:
    """Problems and Service references collected while parsing one object."""

    def __init__(self, *, source: str, obj: str) -> None:
        self.source = source
        self.obj = obj
        self.problems: list[Problem] = []
        self.references: list[ServiceReference] = []
        self.invalid = False

    def error(self, path: str, message: str) -> None:
        """Report an invalid value: the object will be left out of the model."""
        self.invalid = True
        self.warn(path, message)

    def warn(self, path: str, message: str) -> None:
        """Report a problem that does not make the object unusable."""
        self.problems.append(Problem(message=message, source=self.source, obj=self.obj, field=path))

    def refer(
        self,
        path: str,
        role: ReferenceRole,
        namespace: str,
        name: str,
        ports: tuple[tuple[str, int | str], ...] = (),
    ) -> None:
        """Record a reference to Service ``namespace/name`` made at ``path``."""
        self.references.append(
            ServiceReference(
                source=self.source,
                obj=self.obj,
                field=path,
                role=role,
                namespace=namespace,
                name=name,
                ports=ports,
            )
        )

    def view(self, value: object, path: str, allowed: Collection[str]) -> Fields | None:
        """``value`` as :class:`Fields`, or ``None`` (reported) if it is not an object.

        Keys outside ``allowed`` are reported as unknown fields and otherwise ignored.
        """
        if not isinstance(value, Mapping):
            self.error(path, f"must be an object, got {describe(value)}")
            return None
        for key in value:
            if not isinstance(key, str):
                self.error(path, f"field names must be strings, got {describe(key)}")
            elif key not in allowed:
                self.warn(_join(path, key), f"unknown field{_unknown_hint(key, allowed)}")
        return Fields(self, value, path)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class Fields:
    """A view of one mapping inside an object, at ``path``, with typed getters.

    ``null`` reads as absent, as in Kubernetes. Every getter reports a problem and
    returns ``default`` when the value is missing (if ``required``) or invalid.
    """

    def __init__(self, ctx: ObjectContext, data: Mapping[str, Any], path: str) -> None:
        self.ctx = ctx
        self.data = data
        self.path = path

    def at(self, key: str) -> str:
        """The field path of ``key`` in this view."""
        return _join(self.path, key)

    def has(self, key: str) -> bool:
        """Whether ``key`` is present and not ``null``."""
        return self.data.get(key) is not None

    def raw(self, key: str) -> Any:
        """The raw value of ``key`` (``None`` when absent)."""
        return self.data.get(key)

    def error(self, key: str, message: str) -> None:
        """Report an invalid value at ``key``."""
        self.ctx.error(self.at(key), message)

    def _absent(self, key: str, required: bool) -> bool:
        if self.data.get(key) is not None:
            return False
        if required:
            self.error(key, "is required")
        return True

    def string(
        self, key: str, default: T = "", *, required: bool = False, check: Check | None = None
    ) -> str | T:
        """A string field; ``check`` validates its value."""
        if self._absent(key, required):
            return default
        value = self.data[key]
        if not isinstance(value, str):
            hint = f' (quote it: "{_scalar_text(value)}")' if _is_scalar(value) else ""
            self.error(key, f"must be a string, got {describe(value)}{hint}")
            return default
        message = check(value) if check else None
        if message:
            self.error(key, message)
            return default
        return value

    def integer(
        self,
        key: str,
        default: T,
        *,
        required: bool = False,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | T:
        """An integer field within ``[minimum, maximum]``."""
        if self._absent(key, required):
            return default
        value = self.data[key]
        what = _bounds("an integer", minimum, maximum)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"must be {what}, got {describe(value)}")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.error(key, f"must be {what}, got {value}")
            return default
        return value

    def number(
        self,
        key: str,
        default: T,
        *,
        required: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
        positive: bool = False,
    ) -> float | T:
        """A number (integer or decimal) within ``[minimum, maximum]``; ``positive``: > 0."""
        if self._absent(key, required):
            return default
        value = self.data[key]
        what = "a number > 0" if positive else _bounds("a number", minimum, maximum)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key, f"must be {what}, got {describe(value)}")
            return default
        if (
            (positive and value <= 0)
            or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)
        ):
            self.error(key, f"must be {what}, got {value}")
            return default
        return float(value)

    def percent(self, key: str, default: T, *, required: bool = False) -> float | T:
        """A percentage, a number between 0 and 100."""
        return self.number(key, default, required=required, minimum=0, maximum=100)

    def boolean(self, key: str, default: T, *, required: bool = False) -> bool | T:
        """A boolean (``true``/``false``; strings are not booleans)."""
        if self._absent(key, required):
            return default
        value = self.data[key]
        if not isinstance(value, bool):
            self.error(key, f"must be true or false, got {describe(value)}")
            return default
        return value

    def duration(
        self, key: str, default: T, *, required: bool = False, positive: bool = False
    ) -> float | T:
        """A GEP-2257 duration (``1s``, ``500ms``, ``1m30s``) in seconds."""
        if self._absent(key, required):
            return default
        value = self.data[key]
        expected = 'a duration like "1s", "500ms" or "1m30s"'
        if isinstance(value, int | float) and not isinstance(value, bool):
            self.error(key, f'must be {expected}, got {describe(value)} (add a unit: "{value}s")')
            return default
        try:
            seconds = parse_duration(value)
        except ValueError:
            self.error(key, f"must be {expected}, got {describe(value)}")
            return default
        if positive and seconds <= 0:
            self.error(key, f"must be longer than 0s, got {quote(value)}")
            return default
        return seconds

    def strings(
        self,
        key: str,
        *,
        required: bool = False,
        non_empty: bool = False,
        check: Check | None = None,
        unique: bool = False,
    ) -> tuple[str, ...]:
        """A list of strings, each validated by ``check``; invalid items are dropped.

        ``required`` implies ``non_empty``: if present, the list must have an item.
        """
        if self._absent(key, required):
            return ()
        items = self.data[key]
        if not isinstance(items, list):
            self.error(key, f"must be a list of strings, got {describe(items)}")
            return ()
        if (required or non_empty) and not items:
            self.error(key, "must not be empty")
        out: list[str] = []
        for i, item in enumerate(items):
            path = f"{self.at(key)}[{i}]"
            if not isinstance(item, str):
                self.ctx.error(path, f"must be a string, got {describe(item)}")
                continue
            message = check(item) if check else None
            if message:
                self.ctx.error(path, message)
            elif unique and item in out:
                self.ctx.error(path, f"duplicate value {quote(item)}")
            else:
                out.append(item)
        return tuple(out)

    def string_map(self, key: str) -> dict[str, str]:
        """A map of strings to strings (labels, annotations)."""
        if self._absent(key, False):
            return {}
        value = self.data[key]
        if not isinstance(value, Mapping):
            self.error(key, f"must be a map of strings, got {describe(value)}")
            return {}
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                hint = f' (quote it: "{_scalar_text(v)}")' if _is_scalar(v) else ""
                what = f"key {quote(k)}" if isinstance(k, str) else f"key {describe(k)}"
                self.error(key, f"{what}: keys and values must be strings, got {describe(v)}{hint}")
                continue
            out[k] = v
        return out

    def child(self, key: str, allowed: Collection[str], *, required: bool = False) -> Fields | None:
        """The nested object at ``key`` (``None`` when absent or invalid)."""
        if self._absent(key, required):
            return None
        return self.ctx.view(self.data[key], self.at(key), allowed)

    def children(
        self, key: str, allowed: Collection[str], *, required: bool = False
    ) -> list[Fields]:
        """The list of objects at ``key``; items that are not objects are reported."""
        if self._absent(key, required):
            return []
        items = self.data[key]
        if not isinstance(items, list):
            self.error(key, f"must be a list, got {describe(items)}")
            return []
        path = self.at(key)
        views = (self.ctx.view(item, f"{path}[{i}]", allowed) for i, item in enumerate(items))
        return [v for v in views if v is not None]

    def unsupported(self, key: str, what: str) -> None:
        """Report ``key``, a real but not yet implemented field, if present."""
        if self.has(key):
            self.error(key, f"{what} is not supported yet")


def _bounds(what: str, minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{what} between {_num(minimum)} and {_num(maximum)}"
    if minimum is not None:
        return f"{what} >= {_num(minimum)}"
    if maximum is not None:
        return f"{what} <= {_num(maximum)}"
    return what


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _is_scalar(value: object) -> bool:
    return isinstance(value, bool | int | float)


def _scalar_text(value: object) -> str:
    return quote(value) if isinstance(value, bool) else str(value)
