"""Authorization: the RBAC HTTP filters of a server Listener, compiled for calls.

The control plane sends AccessPolicy rules as standard RBAC filters
(``envoy.extensions.filters.http.rbac.v3.RBAC``, as gRPC's gRFC A41 and Envoy read
them) before the router: a DENY filter, then an ALLOW filter. They are decoded once,
into closures, so a call's check is a few string comparisons:

* a DENY engine denies a call one of its policies matches;
* an ALLOW engine denies a call none of its policies matches;
* with no engines at all, every call is allowed.

A policy matches when one of its permissions matches the method path and one of its
principals matches the caller's SPIFFE ID (``None`` for a plaintext caller, which only
``any`` and ``not_id`` can match).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.type.matcher.v3 import string_pb2

from meshlib.errors import XdsError

__all__ = ["AuthorizationPolicy", "Decision", "decode_rbac_filters"]

_RBAC_TYPE = rbac_pb2.RBAC.DESCRIPTOR.full_name
_Match = Callable[[str | None, str], bool]  # (principal, method path) -> bool
_ALLOW, _DENY = rbac_config_pb2.RBAC.ALLOW, rbac_config_pb2.RBAC.DENY


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a call may proceed, and why (for logs, never for the caller)."""

    allowed: bool
    reason: str


_ALLOWED = Decision(True, "allowed")


@dataclass(frozen=True, slots=True)
class _Engine:
    action: str  # "ALLOW" or "DENY"
    filter_name: str
    policies: tuple[tuple[str, _Match], ...]


@dataclass(frozen=True, slots=True)
class AuthorizationPolicy:
    """Compiled RBAC engines, evaluated in order (DENY before ALLOW as sent)."""

    engines: tuple[_Engine, ...]

    def check(self, principal: str | None, method: str) -> Decision:
        """The decision for a caller (its SPIFFE ID, or None) calling ``method``."""
        for engine in self.engines:
            matched = None
            for name, match in engine.policies:
                if match(principal, method):
                    matched = name
                    break
            if engine.action == "DENY" and matched is not None:
                return Decision(False, f"denied by policy {matched!r} (DENY)")
            if engine.action == "ALLOW" and matched is None:
                return Decision(False, f"no ALLOW policy of {engine.filter_name} matched")
        return _ALLOWED


def decode_rbac_filters(http_filters: Iterable[object]) -> AuthorizationPolicy | None:
    """The authorization of an HttpConnectionManager's ``http_filters``; None when it
    has no RBAC filter with rules (allow all). Raises XdsError for what it cannot
    enforce, so the Listener is NACKed rather than half-enforced."""
    engines: list[_Engine] = []
    for http_filter in http_filters:
        typed = http_filter.typed_config  # type: ignore[attr-defined]
        if typed.type_url.rsplit("/", 1)[-1] != _RBAC_TYPE:
            continue
        config = rbac_pb2.RBAC()
        if not typed.Unpack(config):
            raise XdsError(f"{http_filter.name}: cannot decode the RBAC filter")  # type: ignore[attr-defined]
        if not config.HasField("rules"):
            continue  # no rules: the filter does nothing (shadow rules only log)
        rules = config.rules
        if rules.action not in (_ALLOW, _DENY):
            continue  # LOG: nothing to enforce
        policies = tuple((name, _policy(rules.policies[name], f"{http_filter.name}/{name}"))  # type: ignore[attr-defined]
                         for name in sorted(rules.policies))
        engines.append(_Engine("ALLOW" if rules.action == _ALLOW else "DENY",
                               http_filter.name, policies))  # type: ignore[attr-defined]
    return AuthorizationPolicy(tuple(engines)) if engines else None


def _policy(policy: rbac_config_pb2.Policy, where: str) -> _Match:
    if policy.HasField("condition") or policy.HasField("checked_condition"):
        raise XdsError(f"RBAC policy {where}: CEL conditions are not supported")
    permission = _any_of([_permission(p, where) for p in policy.permissions])
    principal_ = _any_of([_principal(p, where) for p in policy.principals])
    if permission is _TRUE:
        return lambda principal, method: principal_(principal)
    if principal_ is _TRUE:
        return lambda principal, method: permission(method)
    return lambda principal, method: permission(method) and principal_(principal)


def _TRUE(_: object) -> bool:
    return True


def _FALSE(_: object) -> bool:
    return False


def _any_of(fns: list[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    """One matcher for "any of ``fns``", without a generator per call."""
    if _TRUE in fns:
        return _TRUE
    if not fns:
        return _FALSE
    if len(fns) == 1:
        return fns[0]

    def match(value: Any) -> bool:
        for fn in fns:  # noqa: SIM110 -- a loop, not a generator: this runs per call
            if fn(value):
                return True
        return False
    return match


def _permission(p: rbac_config_pb2.Permission, where: str) -> Callable[[str], bool]:
    kind = p.WhichOneof("rule")
    if kind == "any":
        return _TRUE
    if kind == "url_path":
        if p.url_path.WhichOneof("rule") != "path":
            raise XdsError(f"RBAC policy {where}: url_path needs a path matcher")
        return _string(p.url_path.path, where)
    if kind == "header" and p.header.name == ":path":
        return _header(p.header, where)
    if kind in ("and_rules", "or_rules"):
        parts = [_permission(r, where) for r in getattr(p, kind).rules]
        combine = all if kind == "and_rules" else any
        return lambda method: combine(part(method) for part in parts)
    if kind == "not_rule":
        inner = _permission(p.not_rule, where)
        return lambda method: not inner(method)
    detail = f"header {p.header.name!r}" if kind == "header" else kind
    raise XdsError(f"RBAC policy {where}: permission {detail} is not supported")


def _principal(p: rbac_config_pb2.Principal, where: str) -> Callable[[str | None], bool]:
    kind = p.WhichOneof("identifier")
    if kind == "any":
        return _TRUE
    if kind == "authenticated":
        if not p.authenticated.HasField("principal_name"):
            return lambda principal: principal is not None
        matcher = _string(p.authenticated.principal_name, where)
        return lambda principal: principal is not None and matcher(principal)  # type: ignore[arg-type]
    if kind in ("and_ids", "or_ids"):
        parts = [_principal(i, where) for i in getattr(p, kind).ids]
        combine = all if kind == "and_ids" else any
        return lambda principal: combine(part(principal) for part in parts)
    if kind == "not_id":
        inner = _principal(p.not_id, where)
        return lambda principal: not inner(principal)
    raise XdsError(f"RBAC policy {where}: principal {kind} is not supported "
                   "(identities only)")


def _header(header: object, where: str) -> Callable[[str], bool]:
    kind = header.WhichOneof("header_match_specifier")  # type: ignore[attr-defined]
    if kind == "string_match":
        match = _string(header.string_match, where)  # type: ignore[attr-defined]
    elif kind in ("exact_match", "prefix_match", "suffix_match", "contains_match"):
        value = getattr(header, kind)
        op = kind.removesuffix("_match")
        match = _string(string_pb2.StringMatcher(**{op: value}), where)
    else:
        raise XdsError(f"RBAC policy {where}: header match {kind} is not supported")
    if header.invert_match:  # type: ignore[attr-defined]
        return lambda method: not match(method)
    return match


def _string(m: string_pb2.StringMatcher, where: str) -> Callable[[str], bool]:
    kind = m.WhichOneof("match_pattern")
    fold = m.ignore_case

    def norm(text: str) -> str:
        return text.lower() if fold else text
    if kind == "safe_regex":
        try:
            pattern = re.compile(m.safe_regex.regex, re.IGNORECASE if fold else 0)
        except re.error as err:
            raise XdsError(f"RBAC policy {where}: bad regex {m.safe_regex.regex!r}: "
                           f"{err}") from err
        return lambda text: pattern.fullmatch(text) is not None
    if kind not in ("exact", "prefix", "suffix", "contains"):
        raise XdsError(f"RBAC policy {where}: string matcher {kind} is not supported")
    value = norm(getattr(m, kind))
    if kind == "exact":
        return (lambda text: text.lower() == value) if fold else (lambda text: text == value)
    if fold:
        if kind == "prefix":
            return lambda text: text.lower().startswith(value)
        if kind == "suffix":
            return lambda text: text.lower().endswith(value)
        return lambda text: value in text.lower()
    if kind == "prefix":
        return lambda text: text.startswith(value)
    if kind == "suffix":
        return lambda text: text.endswith(value)
    return lambda text: value in text


