"""Authorization: the RBAC HTTP filters of a server Listener, compiled for calls.

The control plane sends AccessPolicy rules as standard RBAC filters
(``envoy.extensions.filters.http.rbac.v3.RBAC``, read as gRPC's gRFC A41 and Envoy read
them, https://github.com/grpc/proposal/blob/master/A41-xds-rbac.md) before the router:
a DENY filter, then an ALLOW filter. They are decoded once, into closures, so a call's
check is a few string comparisons and allocates nothing:

* the engines (one per RBAC filter) are evaluated in filter order;
* a DENY engine denies a call one of its policies matches;
* an ALLOW engine denies a call none of its policies matches;
* a call no engine denies is allowed; with no engines at all, every call is.

A policy matches when one of its permissions matches the method path
(``/pkg.Service/Method``) and one of its principals matches the caller's SPIFFE ID
(``None`` for a plaintext caller, which only ``any`` and ``not_id`` can match).
Regexes are RE2 (linear time, as in gRPC and Envoy; a pattern RE2 refuses is
NACKed), and a path longer than :data:`~meshlib.contract.regex.MAX_MATCH_LENGTH` is
denied before any policy is evaluated (so is such a principal), so no request makes
a check expensive.

What cannot be enforced exactly raises :class:`~meshlib.errors.XdsError`, so the
Listener is NACKed rather than half-enforced: principals other than ``any``,
``authenticated``, ``and_ids``, ``or_ids``, ``not_id``; permissions other than ``any``,
``url_path``, a ``:path`` header, ``and_rules``, ``or_rules``, ``not_rule``; CEL
conditions; the unified ``matcher``; a ``disabled`` (per-route) RBAC filter. As in
gRFC A41, ``shadow_rules`` and audit logging are ignored (they never decide a call) and
a filter whose action is LOG, or without ``rules``, is a no-op.

Example::

    policy = decode_rbac_filters(hcm.http_filters)     # None: nothing to enforce
    policy.check("spiffe://cluster.local/ns/default/sa/frontend", "/demo.Reviews/Get")
    # Decision(allowed=True, reason="allowed by policy 'default/reviews/rules[0]' (ALLOW)")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import string_pb2

from meshlib.contract.regex import MAX_MATCH_LENGTH, RegexError, fullmatcher
from meshlib.errors import XdsError

__all__ = ["AuthorizationPolicy", "Decision", "decode_rbac_filters"]

_RBAC_TYPE = rbac_pb2.RBAC.DESCRIPTOR.full_name
_ACTIONS = {rbac_config_pb2.RBAC.ALLOW: "ALLOW", rbac_config_pb2.RBAC.DENY: "DENY"}

_T = TypeVar("_T")
_Matcher = Callable[[_T], bool]
_Match = Callable[[str | None, str], bool]  # (principal, method path) -> bool


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a call may proceed, and why (for logs, never for the caller)."""

    allowed: bool
    reason: str


_NOT_DENIED = Decision(True, "no DENY policy matched")
_TOO_LONG = Decision(False, f"path or principal longer than {MAX_MATCH_LENGTH} characters")


@dataclass(frozen=True, slots=True)
class _Policy:
    """One named RBAC policy: ``match`` (compiled) and the decision when it matches."""

    name: str
    match: _Match = field(compare=False, repr=False)
    decision: Decision = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class _Engine:
    """One RBAC filter. Equality is the filter's: name, action and rules as sent."""

    filter_name: str
    action: Literal["ALLOW", "DENY"]
    policies: tuple[_Policy, ...]
    rules: bytes = field(repr=False)  # deterministic serialization: value equality
    no_match: Decision | None = field(compare=False, repr=False)  # ALLOW: the denial


@dataclass(frozen=True, slots=True)
class AuthorizationPolicy:
    """The compiled RBAC engines of one server Listener, evaluated in filter order.

    Two policies decoded from the same filters compare equal, so an unchanged
    Listener is no change.

    Example::

        decision = policy.check(peer_principal(context), "/demo.Reviews/Get")
        if not decision.allowed:
            log.info("denied: %s", decision.reason)
    """

    engines: tuple[_Engine, ...]

    def check(self, principal: str | None, method: str) -> Decision:
        """The decision for a caller (its SPIFFE ID, or None when plaintext) calling
        ``method`` (``/pkg.Service/Method``). A ``method`` or ``principal`` longer
        than :data:`~meshlib.contract.regex.MAX_MATCH_LENGTH` is denied (no regex
        matches it, which must not let it past a DENY policy)."""
        if len(method) > MAX_MATCH_LENGTH or (
                principal is not None and len(principal) > MAX_MATCH_LENGTH):
            return _TOO_LONG
        decision = _NOT_DENIED
        for engine in self.engines:
            for policy in engine.policies:
                if policy.match(principal, method):
                    if engine.no_match is None:  # DENY
                        return policy.decision
                    decision = policy.decision
                    break
            else:
                if engine.no_match is not None:  # ALLOW, and nothing matched
                    return engine.no_match
        return decision


def decode_rbac_filters(http_filters: Iterable[hcm_pb2.HttpFilter]
                        ) -> AuthorizationPolicy | None:
    """The authorization of an HttpConnectionManager's ``http_filters`` (other filters
    are skipped); None when no RBAC filter enforces anything (allow all).

    Raises :class:`~meshlib.errors.XdsError`, naming the filter, policy and field, for
    what meshlib cannot enforce exactly, so the Listener is NACKed."""
    engines: list[_Engine] = []
    for i, http_filter in enumerate(http_filters):
        where = f"http_filters[{i}] ({http_filter.name})"
        if not _is_rbac(http_filter, where):
            continue
        config = rbac_pb2.RBAC()
        if not http_filter.typed_config.Unpack(config):
            raise XdsError(f"{where}: cannot decode the RBAC filter")
        if http_filter.disabled:
            raise XdsError(f"{where}: a disabled RBAC filter (enabled per route) is not "
                           "supported")
        if config.HasField("matcher"):
            raise XdsError(f"{where}: the RBAC 'matcher' field is not supported; use "
                           "'rules'")
        if not config.HasField("rules"):
            continue  # no rules: the filter enforces nothing (shadow rules only log)
        engine = _engine(http_filter.name, config.rules, where)
        if engine is not None:
            engines.append(engine)
    return AuthorizationPolicy(tuple(engines)) if engines else None


def _is_rbac(http_filter: hcm_pb2.HttpFilter, where: str) -> bool:
    if http_filter.HasField("config_discovery"):
        urls = http_filter.config_discovery.type_urls
        if any(url.rsplit("/", 1)[-1] == _RBAC_TYPE for url in urls):
            raise XdsError(f"{where}: an RBAC filter over ECDS (config_discovery) is not "
                           "supported")
        return False
    return http_filter.typed_config.type_url.rsplit("/", 1)[-1] == _RBAC_TYPE


def _engine(filter_name: str, rules: rbac_config_pb2.RBAC, where: str) -> _Engine | None:
    if rules.action == rbac_config_pb2.RBAC.LOG:
        return None  # gRFC A41: a LOG filter is ignored, as if absent
    action = _ACTIONS.get(rules.action)
    if action is None:
        raise XdsError(f"{where}: unknown RBAC action {rules.action}")
    policies = []
    for name in sorted(rules.policies):  # any order decides the same; this one is stable
        match = _policy(rules.policies[name], f"{where}: policy {name!r}")
        outcome = "denied" if action == "DENY" else "allowed"
        policies.append(_Policy(name, match,
                                Decision(action == "ALLOW",
                                         f"{outcome} by policy {name!r} ({action})")))
    no_match = (Decision(False, f"no ALLOW policy matched (filter {filter_name!r})")
                if action == "ALLOW" else None)
    return _Engine(filter_name, action, tuple(policies),
                   rules.SerializeToString(deterministic=True), no_match)


def _policy(policy: rbac_config_pb2.Policy, where: str) -> _Match:
    if policy.HasField("condition") or policy.HasField("checked_condition"):
        raise XdsError(f"{where}: CEL conditions are not supported")
    permission = _any_of([_permission(p, f"{where}: permissions[{i}]")
                          for i, p in enumerate(policy.permissions)])
    principal_ = _any_of([_principal(p, f"{where}: principals[{i}]")
                          for i, p in enumerate(policy.principals)])
    if permission is _FALSE or principal_ is _FALSE:
        return lambda principal, method: False  # an empty side matches nothing
    if permission is _TRUE:
        return lambda principal, method: principal_(principal)
    if principal_ is _TRUE:
        return lambda principal, method: permission(method)
    return lambda principal, method: permission(method) and principal_(principal)


def _TRUE(_: object) -> bool:
    return True


def _FALSE(_: object) -> bool:
    return False


def _any_of(fns: Sequence[_Matcher[_T]]) -> _Matcher[_T]:
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


def _all_of(fns: Sequence[_Matcher[_T]]) -> _Matcher[_T]:
    """One matcher for "all of ``fns``" (callers reject an empty set)."""
    fns = [fn for fn in fns if fn is not _TRUE]
    if not fns:
        return _TRUE
    if len(fns) == 1:
        return fns[0]

    def match(value: Any) -> bool:
        for fn in fns:  # noqa: SIM110 -- a loop, not a generator: this runs per call
            if not fn(value):
                return False
        return True
    return match


def _permission(p: rbac_config_pb2.Permission, where: str) -> _Matcher[str]:
    kind = p.WhichOneof("rule")
    if kind == "any":
        return _TRUE
    if kind == "url_path":
        if p.url_path.WhichOneof("rule") != "path":
            raise XdsError(f"{where}: url_path has no path matcher")
        return _string(p.url_path.path, f"{where}.url_path.path")
    if kind == "header":
        if p.header.name != ":path":
            raise XdsError(f"{where}: header {p.header.name!r} is not supported (only "
                           "':path', the method)")
        return _path_header(p.header, f"{where}.header")
    if kind in ("and_rules", "or_rules"):
        rules = getattr(p, kind).rules
        if not rules:
            raise XdsError(f"{where}.{kind}: no rules")
        parts = [_permission(r, f"{where}.{kind}.rules[{i}]") for i, r in enumerate(rules)]
        return _all_of(parts) if kind == "and_rules" else _any_of(parts)
    if kind == "not_rule":
        inner = _permission(p.not_rule, f"{where}.not_rule")
        return lambda method: not inner(method)
    raise XdsError(f"{where}: permission {kind or '(unset)'} is not supported (any, "
                   "url_path, header ':path', and_rules, or_rules, not_rule)")


def _principal(p: rbac_config_pb2.Principal, where: str) -> _Matcher[str | None]:
    kind = p.WhichOneof("identifier")
    if kind == "any":
        return _TRUE
    if kind == "authenticated":
        if not p.authenticated.HasField("principal_name"):
            return lambda principal: principal is not None  # any caller with an identity
        matcher = _string(p.authenticated.principal_name,
                          f"{where}.authenticated.principal_name")
        return lambda principal: principal is not None and matcher(principal)
    if kind in ("and_ids", "or_ids"):
        ids = getattr(p, kind).ids
        if not ids:
            raise XdsError(f"{where}.{kind}: no ids")
        parts = [_principal(i, f"{where}.{kind}.ids[{n}]") for n, i in enumerate(ids)]
        return _all_of(parts) if kind == "and_ids" else _any_of(parts)
    if kind == "not_id":
        inner = _principal(p.not_id, f"{where}.not_id")
        return lambda principal: not inner(principal)
    raise XdsError(f"{where}: principal {kind or '(unset)'} is not supported (identities "
                   "only: any, authenticated, and_ids, or_ids, not_id)")


def _path_header(header: rc_pb2.HeaderMatcher, where: str) -> _Matcher[str]:
    """A ``:path`` HeaderMatcher; the path is always present."""
    kind = header.WhichOneof("header_match_specifier")
    if kind == "string_match":
        match = _string(header.string_match, f"{where}.string_match")
    elif kind == "safe_regex_match":
        match = _regex(header.safe_regex_match.regex, f"{where}.safe_regex_match")
    elif kind in ("exact_match", "prefix_match", "suffix_match", "contains_match"):
        op = kind.removesuffix("_match")
        match = _string(string_pb2.StringMatcher(**{op: getattr(header, kind)}), where)
    elif kind == "present_match":
        match = _TRUE if header.present_match else _FALSE
    else:
        raise XdsError(f"{where}: header match {kind or '(unset)'} is not supported")
    if header.invert_match:
        return lambda method: not match(method)
    return match


def _regex(regex: str, where: str) -> _Matcher[str]:
    """An RE2 regex; it must match the whole value."""
    try:
        return fullmatcher(regex)
    except RegexError as err:
        raise XdsError(f"{where}: bad regex {regex!r}: {err} (RE2 syntax)") from err


def _string(m: string_pb2.StringMatcher, where: str) -> _Matcher[str]:
    """A StringMatcher; ``ignore_case`` folds exact/prefix/suffix/contains (not regex,
    as in Envoy)."""
    kind = m.WhichOneof("match_pattern")
    if kind == "safe_regex":
        return _regex(m.safe_regex.regex, f"{where}.safe_regex")
    if kind not in ("exact", "prefix", "suffix", "contains"):
        raise XdsError(f"{where}: string match {kind or '(unset)'} is not supported")
    value: str = getattr(m, kind)
    if m.ignore_case:
        value = value.lower()
        if kind == "exact":
            return lambda text: text.lower() == value
        if kind == "prefix":
            return lambda text: text.lower().startswith(value)
        if kind == "suffix":
            return lambda text: text.lower().endswith(value)
        return lambda text: value in text.lower()
    if kind == "exact":
        return lambda text: text == value
    if kind == "prefix":
        return lambda text: text.startswith(value)
    if kind == "suffix":
        return lambda text: text.endswith(value)
    return lambda text: value in text
