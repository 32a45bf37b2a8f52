"""String, header and query-parameter matchers of xDS routes, decoded and evaluated.

Semantics follow Envoy and gRFC A28
(https://github.com/grpc/proposal/blob/master/A28-xds-traffic-splitting-and-routing.md):
``safe_regex`` is RE2 and must match the whole value (a value longer than
:data:`~meshlib.contract.regex.MAX_MATCH_LENGTH` matches no regex); ``invert_match``
negates the result; a header that is absent matches nothing but an inverted
``present_match``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.type.matcher.v3 import string_pb2

from meshlib.contract.regex import RegexError, fullmatcher
from meshlib.xds._resources import ROUTE, ResourceValidationError

__all__ = [
    "HeaderMatcher",
    "QueryParameterMatcher",
    "StringMatcher",
    "compile_regex",
    "decode_header_matcher",
    "decode_query_matcher",
    "decode_string_matcher",
]

StringMatchKind = Literal["exact", "prefix", "suffix", "contains", "regex"]


def compile_regex(regex: str, field: str, name: str) -> Callable[[str], bool]:
    """An RE2 ``regex`` as a full-match predicate; a pattern RE2 refuses (such as a
    backreference or a lookahead) is a validation error, so the resource is NACKed."""
    try:
        return fullmatcher(regex)
    except RegexError as err:
        raise ResourceValidationError(f"{field}: invalid regex {regex!r}: {err} (RE2 syntax)",
                                      type_url=ROUTE, resource_name=name) from err


@dataclass(frozen=True, slots=True, kw_only=True)
class StringMatcher:
    """One ``StringMatcher``: ``kind`` of match against ``value`` (or ``pattern``, the
    compiled regex: equal matchers are those of equal kind and value)."""

    kind: StringMatchKind
    value: str
    ignore_case: bool = False
    pattern: Callable[[str], bool] | None = field(default=None, compare=False, repr=False)

    def matches(self, text: str) -> bool:
        """Whether ``text`` matches."""
        if self.pattern is not None:
            return self.pattern(text)
        value = self.value
        if self.ignore_case:
            text, value = text.lower(), value.lower()
        if self.kind == "exact":
            return text == value
        if self.kind == "prefix":
            return text.startswith(value)
        if self.kind == "suffix":
            return text.endswith(value)
        return value in text


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderMatcher:
    """A header condition: ``string`` match, or only presence when ``string`` is None."""

    name: str
    string: StringMatcher | None = None
    present: bool = True
    invert: bool = False

    def matches(self, headers: Mapping[str, str]) -> bool:
        """Whether ``headers`` (lower-case names, values of one name joined by ``,``)
        satisfy this matcher."""
        value = headers.get(self.name)
        if value is None:
            return self.string is None and self.present == self.invert
        result = self.present if self.string is None else self.string.matches(value)
        return result != self.invert


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryParameterMatcher:
    """A query-parameter condition: ``string`` match, or presence when it is None."""

    name: str
    string: StringMatcher | None = None

    def matches(self, params: Mapping[str, str]) -> bool:
        """Whether the parsed query ``params`` satisfy this matcher."""
        value = params.get(self.name)
        if value is None:
            return False
        return self.string is None or self.string.matches(value)


def decode_string_matcher(proto: string_pb2.StringMatcher, field: str,
                          name: str) -> StringMatcher:
    """A ``StringMatcher`` proto as a :class:`StringMatcher`."""
    kind = proto.WhichOneof("match_pattern")
    if kind == "safe_regex":
        return StringMatcher(kind="regex", value=proto.safe_regex.regex,
                             pattern=compile_regex(proto.safe_regex.regex, field, name))
    if kind in ("exact", "prefix", "suffix", "contains"):
        return StringMatcher(kind=kind, value=getattr(proto, kind),
                             ignore_case=proto.ignore_case)
    raise ResourceValidationError(f"{field}: unsupported string match {kind or 'unset'}",
                                  type_url=ROUTE, resource_name=name)


def decode_header_matcher(proto: rc_pb2.HeaderMatcher, field: str, name: str) -> HeaderMatcher:
    """A ``HeaderMatcher`` proto (legacy ``*_match`` fields or ``string_match``)."""
    header = proto.name.lower()
    if not header:
        raise ResourceValidationError(f"{field}: header name is empty",
                                      type_url=ROUTE, resource_name=name)
    kind = proto.WhichOneof("header_match_specifier")
    invert = proto.invert_match
    if kind == "present_match":
        return HeaderMatcher(name=header, present=proto.present_match, invert=invert)
    if kind == "string_match":
        string = decode_string_matcher(proto.string_match, f"{field}.string_match", name)
    elif kind == "exact_match":
        string = StringMatcher(kind="exact", value=proto.exact_match)
    elif kind == "safe_regex_match":
        regex = proto.safe_regex_match.regex
        string = StringMatcher(kind="regex", value=regex,
                               pattern=compile_regex(regex, f"{field}.safe_regex_match", name))
    elif kind in ("prefix_match", "suffix_match", "contains_match"):
        string = StringMatcher(kind=kind.removesuffix("_match"),  # type: ignore[arg-type]
                               value=getattr(proto, kind))
    else:
        raise ResourceValidationError(f"{field}: unsupported header match {kind or 'unset'}",
                                      type_url=ROUTE, resource_name=name)
    return HeaderMatcher(name=header, string=string, invert=invert)


def decode_query_matcher(proto: rc_pb2.QueryParameterMatcher, field: str,
                         name: str) -> QueryParameterMatcher:
    """A ``QueryParameterMatcher`` proto."""
    if not proto.name:
        raise ResourceValidationError(f"{field}: query parameter name is empty",
                                      type_url=ROUTE, resource_name=name)
    if proto.HasField("string_match"):
        string = decode_string_matcher(proto.string_match, f"{field}.string_match", name)
        return QueryParameterMatcher(name=proto.name, string=string)
    return QueryParameterMatcher(name=proto.name)
