"""Authorization: AccessPolicy rules → RBAC HTTP filters on a server's HttpConnectionManager.

gRPC servers (gRFC A41, https://github.com/grpc/proposal/blob/master/A41-xds-rbac.md),
Envoy and meshlib all read ``envoy.extensions.filters.http.rbac.v3.RBAC``. DENY rules
are checked before ALLOW rules, so a server gets up to two filters, in this order:

* ``meshlib.rbac.deny`` (when there are DENY rules): action DENY, one Policy per rule;
* ``meshlib.rbac.allow`` (when there are ALLOW rules): action ALLOW, one Policy per rule.
  Without ALLOW rules there is no ALLOW filter: whatever is not denied is allowed.

Each :class:`~xds_server.model.AccessRule` is one Policy named
``<namespace>/<policy>/rules[<i>]``. Its principals (OR) match the caller's certificate
(``authenticated.principal_name``, which gRPC and Envoy match against the URI SAN, the
SPIFFE ID): identities as written, service accounts and namespaces as the SPIFFE IDs
they stand for. Its permissions (OR) match the request path (``url_path``), as gRPC
methods ``/pkg.Service/Method`` are paths. An empty side is ``any: true``.

``*`` is a wildcard: any characters in identities, methods and paths (a trailing ``*``
becomes a prefix match, others an RE2 ``safe_regex``); within one SPIFFE ID segment
(``[^/]*``) in namespaces and service accounts. A caller without a certificate has no
principal name: it matches only rules with no ``from``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2

from xds_server.model import AccessPolicy, AccessRule
from xds_server.translate._protos import pack
from xds_server.translate.names import RBAC_ALLOW_FILTER, RBAC_DENY_FILTER

__all__ = [
    "identity_matcher",
    "namespace_matcher",
    "path_matcher",
    "rbac_filters",
    "rule_policy",
    "service_account_matcher",
]

_StringMatcher = string_pb2.StringMatcher
_RE2_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")
_ANY_SEGMENT = "[^/]*"


def rbac_filters(policies: Iterable[AccessPolicy], trust_domain: str
                 ) -> list[hcm_pb2.HttpFilter]:
    """The DENY then ALLOW RBAC filters for ``policies`` (none when they have no rules)."""
    by_action: dict[str, dict[str, rbac_pb2.Policy]] = {"DENY": {}, "ALLOW": {}}
    for policy in policies:
        for i, rule in enumerate(policy.rules):
            name = f"{policy.namespace}/{policy.name}/rules[{i}]"
            by_action[rule.action][name] = rule_policy(rule, policy.namespace, trust_domain)
    out: list[hcm_pb2.HttpFilter] = []
    for action, filter_name in (("DENY", RBAC_DENY_FILTER), ("ALLOW", RBAC_ALLOW_FILTER)):
        if by_action[action]:
            rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.Action.Value(action),
                                  policies=by_action[action])
            out.append(hcm_pb2.HttpFilter(
                name=filter_name, typed_config=pack(rbac_filter_pb2.RBAC(rules=rules))))
    return out


def rule_policy(rule: AccessRule, namespace: str, trust_domain: str) -> rbac_pb2.Policy:
    """One rule as an RBAC Policy; ``namespace`` is the AccessPolicy's (for bare accounts)."""
    matchers = [  # duplicates are harmless: principals are OR-ed
        *(identity_matcher(i) for i in rule.from_identities),
        *(service_account_matcher(a, namespace, trust_domain)
          for a in rule.from_service_accounts),
        *(namespace_matcher(n, trust_domain) for n in rule.from_namespaces),
    ]
    principals = [_principal(m) for m in matchers] or [rbac_pb2.Principal(any=True)]
    patterns = tuple(dict.fromkeys((*rule.to_methods, *rule.to_paths)))
    if not patterns or "*" in patterns:
        permissions = [rbac_pb2.Permission(any=True)]
    else:
        permissions = [rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=path_matcher(p)))
                       for p in patterns]
    return rbac_pb2.Policy(principals=principals, permissions=permissions)


def identity_matcher(pattern: str) -> _StringMatcher:
    """A SPIFFE ID pattern (``*``: any characters) as a principal-name matcher.

    ``"*"`` alone is any SPIFFE ID (prefix ``spiffe://``): a caller *with* an identity.
    """
    if pattern == "*":
        return _StringMatcher(prefix="spiffe://")
    return _glob(pattern)


def service_account_matcher(account: str, namespace: str, trust_domain: str) -> _StringMatcher:
    """``"ns/sa"`` or ``"sa"`` (in ``namespace``) as the SPIFFE ID it stands for."""
    ns, _, sa = account.rpartition("/")
    return _spiffe_matcher(ns or namespace, sa, trust_domain)


def namespace_matcher(namespace: str, trust_domain: str) -> _StringMatcher:
    """Every SPIFFE ID in ``namespace``: prefix ``spiffe://td/ns/<ns>/sa/``."""
    return _spiffe_matcher(namespace, "*", trust_domain)


def path_matcher(pattern: str) -> _StringMatcher:
    """A method or path pattern as a path matcher (``"*"`` alone: prefix ``/``)."""
    return _StringMatcher(prefix="/") if pattern == "*" else _glob(pattern)


def _spiffe_matcher(namespace: str, account: str, trust_domain: str) -> _StringMatcher:
    base = f"spiffe://{trust_domain}/ns/"
    if "*" not in namespace:
        if "*" not in account:
            return _StringMatcher(exact=f"{base}{namespace}/sa/{account}")
        if account == "*":
            return _StringMatcher(prefix=f"{base}{namespace}/sa/")
    regex = _escape(base) + _segment(namespace) + _escape("/sa/") + _segment(account)
    return _StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=regex))


def _segment(pattern: str) -> str:
    return _ANY_SEGMENT.join(_escape(part) for part in pattern.split("*"))


def _glob(pattern: str) -> _StringMatcher:
    """``*``-free: exact; one trailing ``*``: prefix; else a regex, ``*`` being ``.*``."""
    if "*" not in pattern:
        return _StringMatcher(exact=pattern)
    head = pattern[:-1]
    if pattern.endswith("*") and "*" not in head:
        return _StringMatcher(prefix=head)
    regex = ".*".join(_escape(part) for part in pattern.split("*"))
    return _StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=regex))


def _escape(text: str) -> str:
    """``text`` as an RE2 literal (only RE2's special characters escaped)."""
    return _RE2_SPECIAL.sub(r"\\\1", text)


def _principal(matcher: _StringMatcher) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(
        authenticated=rbac_pb2.Principal.Authenticated(principal_name=matcher))
