"""Patterns from config or xDS: RE2's syntax and meaning, linear time, bounded input."""

from __future__ import annotations

import time

import pytest
import re2

from meshlib.contract.regex import MAX_MATCH_LENGTH, RegexError, fullmatcher, regex_error

ADVERSARIAL = "/api/" + "a/" * 4000 + "x"  # ~8 KB: cubic for a backtracking engine


@pytest.mark.parametrize("pattern", [
    r"(a)\1",        # backreference
    r"(?=x)",        # lookahead
    r"(?<!x)y",      # lookbehind
    r"a++",          # possessive
    r"(?>a)",        # atomic group
    r"a{1001}",      # repetition beyond RE2's 1000
    r"\Z",           # Python-only escape
    "a(b",
])
def test_what_re2_refuses_is_refused(pattern):
    assert regex_error(pattern)
    with pytest.raises(RegexError):
        fullmatcher(pattern)


@pytest.mark.parametrize("pattern", [r"\Qa.b\E", r"[[:alpha:]]+", r"\pL", r"(?i)get", r"a\z"])
def test_what_only_re2_accepts_is_accepted(pattern):
    assert regex_error(pattern) is None


@pytest.mark.parametrize(("pattern", "text"), [
    (r"/api/.*/.*/.*/export", "/api/v1/users/42/export"),
    (r"/api/.*/.*/.*/export", "/api/v1/export"),
    (r"/api/.*/export", "/api/a\n/export"),       # "." stops at a newline
    (r"/demo\.Reviews/Get", "/demo.Reviews/Get"),  # a literal
    (r"/demo\.Reviews/Get", "/demoxReviews/Get"),
    (r"a.*b.*c", "abbc"),
    (r"a.*b.*c", "acb"),
    (r"a.*ab.*b", "ab"),                          # literals must not overlap
    (r".*", ""),
    (r"", ""),
    (r"/[^/]+/Get", "/pkg.Svc/Get"),
    (r"/[^/]+/Get", "/a/b/Get"),
    (r"\d+", "٣"),                                  # RE2 classes are ASCII
    (r"get|list", "list"),
    (r"get", "getx"),                               # a full match, not a prefix
    (r"é+", "éé"),
])
def test_matches_as_re2_does(pattern, text):
    match = fullmatcher(pattern)
    expected = re2.fullmatch(pattern, text) is not None
    assert match(text) is expected
    assert match(text) is expected  # a remembered answer is the same


def test_adversarial_input_costs_a_linear_scan():
    for pattern in (r"/api/.*/.*/.*/export", r"/api/(.*)/(.*)/(.*)/export"):
        match = fullmatcher(pattern)
        text = ADVERSARIAL[:MAX_MATCH_LENGTH]
        started = time.perf_counter()
        assert not match(text)
        assert time.perf_counter() - started < 0.01, pattern


def test_values_beyond_the_cap_match_no_regex():
    for pattern in (r"/a.*", r"/a[a-z]*", r"/a(a|b)*"):
        match = fullmatcher(pattern)
        assert match("/a" + "a" * (MAX_MATCH_LENGTH - 2))
        assert not match("/a" + "a" * (MAX_MATCH_LENGTH - 1))
