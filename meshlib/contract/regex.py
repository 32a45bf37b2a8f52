"""Regular expressions from config or xDS: RE2 syntax, full match, bounded input.

Envoy and gRPC evaluate ``safe_regex`` with RE2 (https://github.com/google/re2/wiki/Syntax),
which matches in time linear in the input and has no backreferences or lookaround.
Both sides of the mesh use RE2 too, through ``google-re2``: the control plane accepts
exactly the patterns RE2 accepts (:func:`regex_error`), and meshlib matches with it
(:func:`fullmatcher`), so a pattern means the same to meshlib, gRPC and Envoy, and no
request can make a match cost more than a linear scan.

Values longer than :data:`MAX_MATCH_LENGTH` (8 KiB, gRPC's default metadata limit and
the request-line limit of common HTTP servers) never match a regex; callers for which
"no match" is not safe (authorization) refuse such values before matching.

Plain patterns skip the regex engine (whose binding costs ~0.7 µs a call): a pattern
without metacharacters is compared as a string, and one made of literals joined by
``.*`` (what ``*`` wildcards of an AccessPolicy become) is matched as a glob, with RE2's
meaning (``.`` matches anything but a newline). The answers for recent short values are remembered
(bounded), as calls repeat a few methods and paths.

Example::

    match = fullmatcher(r"/api/.*/export")
    match("/api/v1/export")         # True
    regex_error(r"(a)\\1")           # "invalid escape sequence: \\1"
"""

from __future__ import annotations

from collections.abc import Callable

import re2

__all__ = ["MAX_MATCH_LENGTH", "RegexError", "fullmatcher", "regex_error"]

#: The longest value (in characters) a regex is matched against; longer never matches.
MAX_MATCH_LENGTH = 8192

_REMEMBERED = 512
_REMEMBERED_LENGTH = 256
_META = frozenset(".*+?()|[]{}^$\\")
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is reported to the caller, not on stderr
_OPTIONS.never_capture = True  # only "does it match" is asked
_CORE = getattr(re2, "_re2", None)  # the binding's core, see _engine_matcher


class RegexError(ValueError):
    """A pattern RE2 does not accept; the message is RE2's."""


def regex_error(pattern: str) -> str | None:
    """Why RE2 refuses ``pattern``, or None when it accepts it."""
    try:
        _compile(pattern)
    except RegexError as err:
        return str(err)
    return None


def fullmatcher(pattern: str) -> Callable[[str], bool]:
    """A predicate: whether ``pattern`` (RE2) matches the whole of a value no longer
    than :data:`MAX_MATCH_LENGTH`. Raises :class:`RegexError` for a pattern RE2 refuses."""
    compiled = _compile(pattern)
    parts = _glob_parts(pattern)
    if parts is None:
        return _remembered(_engine_matcher(compiled))
    if len(parts) == 1:
        literal = parts[0]
        return lambda text: text == literal
    return _remembered(_glob_matcher(parts))


def _remembered(match: Callable[[str], bool]) -> Callable[[str], bool]:
    """``match`` with the answers for recent short values kept: calls repeat a few
    methods and paths, and a dict hit (~0.1 µs) beats any matcher. The memory is
    bounded (``_REMEMBERED`` values of at most ``_REMEMBERED_LENGTH`` characters,
    forgotten all at once when full), so values never seen before only cost a miss."""
    answers: dict[str, bool] = {}
    recall = answers.get

    def matches(text: str) -> bool:
        answer = recall(text)
        if answer is None:
            answer = match(text)
            if len(text) <= _REMEMBERED_LENGTH:
                if len(answers) >= _REMEMBERED:
                    answers.clear()
                answers[text] = answer
        return answer
    return matches


def _compile(pattern: str) -> re2._Regexp:
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as err:
        message = err.args[0] if err.args else "invalid pattern"
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        raise RegexError(str(message)) from None


def _engine_matcher(compiled: re2._Regexp) -> Callable[[str], bool]:
    # The binding's core matcher: the public ``fullmatch`` builds offsets and a Match
    # object per call (~3.8 µs); this is ~0.7 µs. Spans are byte offsets, -1 for none.
    core = getattr(compiled, "_regexp", None)
    if _CORE is None or core is None:  # another version of the binding: the public API
        fullmatch = compiled.fullmatch
        return lambda text: len(text) <= MAX_MATCH_LENGTH and fullmatch(text) is not None
    match, both = core.Match, _CORE.RE2.Anchor.ANCHOR_BOTH

    def matches(text: str) -> bool:
        if len(text) > MAX_MATCH_LENGTH:
            return False
        data = text.encode("utf-8", "surrogatepass")
        return match(both, data, 0, len(data))[0][0] >= 0
    return matches


def _glob_parts(pattern: str) -> list[str] | None:
    """The literals of a pattern made only of literals and ``.*``, or None."""
    parts: list[str] = []
    current: list[str] = []
    i, end = 0, len(pattern)
    while i < end:
        char = pattern[i]
        if char == "\\":
            nxt = pattern[i + 1] if i + 1 < end else ""
            if not (nxt.isascii() and not nxt.isalnum() and nxt.isprintable() and nxt != " "):
                return None  # \d, \pL, \Q...: leave it to RE2
            current.append(nxt)
            i += 2
        elif char == "." and pattern[i + 1:i + 2] == "*" and pattern[i + 2:i + 3] != "?":
            parts.append("".join(current))
            current = []
            i += 2
        elif char in _META:
            return None
        else:
            current.append(char)
            i += 1
    parts.append("".join(current))
    if len(parts) > 1 and any("\n" in part for part in parts):
        return None  # a literal newline meets ".*", which stops at newlines
    return parts


def _glob_matcher(parts: list[str]) -> Callable[[str], bool]:
    head, middle, tail = parts[0], parts[1:-1], parts[-1]
    start, fixed = len(head), len(head) + len(tail)
    limit = MAX_MATCH_LENGTH

    def matches(text: str) -> bool:
        size = len(text)
        if (not fixed <= size <= limit or not text.startswith(head)
                or not text.endswith(tail) or "\n" in text):
            return False
        at, stop = start, size - len(tail)
        for part in middle:  # leftmost placement of each literal decides: linear
            at = text.find(part, at, stop)
            if at < 0:
                return False
            at += len(part)
        return True
    return matches
