"""RBAC filters → AuthorizationPolicy → decisions, from real RBAC protos (gRFC A41)."""

from __future__ import annotations

import time
import timeit

import pytest
from envoy.config.core.v3 import config_source_pb2
from envoy.config.rbac.v3 import rbac_pb2 as config_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2
from google.api.expr.v1alpha1 import syntax_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message
from xds.type.matcher.v3 import matcher_pb2

from meshlib.contract.regex import MAX_MATCH_LENGTH
from meshlib.errors import XdsError
from meshlib.security import AuthorizationPolicy, Decision, decode_rbac_filters
from xds_server.translate.rbac import path_matcher

FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"
LEGACY = "spiffe://cluster.local/ns/legacy/sa/old"
GET = "/demo.Reviews/Get"
PUT = "/demo.Reviews/Put"
ALLOW, DENY, LOG = config_pb2.RBAC.ALLOW, config_pb2.RBAC.DENY, config_pb2.RBAC.LOG
Principal, Permission = config_pb2.Principal, config_pb2.Permission


# ------------------------------------------------------------ proto builders

def s(**kw) -> string_pb2.StringMatcher:  # type: ignore[no-untyped-def]
    if "regex" in kw:
        kw["safe_regex"] = regex_pb2.RegexMatcher(regex=kw.pop("regex"))
    return string_pb2.StringMatcher(**kw)


def who(**kw) -> Principal:  # type: ignore[no-untyped-def]
    return Principal(authenticated=Principal.Authenticated(principal_name=s(**kw)))


def path(**kw) -> Permission:  # type: ignore[no-untyped-def]
    return Permission(url_path=path_pb2.PathMatcher(path=s(**kw)))


def header(**kw) -> Permission:  # type: ignore[no-untyped-def]
    return Permission(header=rc_pb2.HeaderMatcher(name=kw.pop("name", ":path"), **kw))


ANY_ID = Principal(any=True)
ANY_PERM = Permission(any=True)
SIGNED_IN = Principal(authenticated=Principal.Authenticated())  # any identity


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def policy(principals, permissions, **kw) -> config_pb2.Policy:  # type: ignore[no-untyped-def]
    return config_pb2.Policy(principals=principals, permissions=permissions, **kw)


def rbac(name: str, action: int, **policies: config_pb2.Policy) -> hcm_pb2.HttpFilter:
    config = rbac_pb2.RBAC(rules=config_pb2.RBAC(action=action, policies=policies))
    return hcm_pb2.HttpFilter(name=name, typed_config=pack(config))


def raw(name: str, config: rbac_pb2.RBAC, **kw) -> hcm_pb2.HttpFilter:  # type: ignore[no-untyped-def]
    return hcm_pb2.HttpFilter(name=name, typed_config=pack(config), **kw)


ROUTER = hcm_pb2.HttpFilter(name="envoy.filters.http.router",
                            typed_config=pack(router_pb2.Router()))


def decode(*filters: hcm_pb2.HttpFilter) -> AuthorizationPolicy:
    authz = decode_rbac_filters([*filters, ROUTER])
    assert authz is not None
    return authz


def only(action: int, principal: Principal = ANY_ID,
         permission: Permission = ANY_PERM) -> AuthorizationPolicy:
    return decode(rbac("rbac", action, p=policy([principal], [permission])))


# ------------------------------------------------------------ engines and decisions

def test_no_rbac_filter_enforces_nothing():
    assert decode_rbac_filters([ROUTER]) is None
    assert decode_rbac_filters([]) is None


def test_deny_is_evaluated_before_allow_and_reasons_name_the_policy():
    authz = decode(
        rbac("meshlib.rbac.deny", DENY, **{"deny-legacy": policy(
            [who(prefix="spiffe://cluster.local/ns/legacy/")], [ANY_PERM])}),
        rbac("meshlib.rbac.allow", ALLOW, everyone=policy([SIGNED_IN], [ANY_PERM])))
    assert authz.check(LEGACY, GET) == Decision(False, "denied by policy 'deny-legacy' (DENY)")
    assert authz.check(FRONTEND, GET) == Decision(True, "allowed by policy 'everyone' (ALLOW)")
    assert authz.check(None, GET) == Decision(
        False, "no ALLOW policy matched (filter 'meshlib.rbac.allow')")


def test_without_an_allow_filter_whatever_is_not_denied_is_allowed():
    authz = only(DENY, who(exact=LEGACY))
    assert authz.check(FRONTEND, GET) == Decision(True, "no DENY policy matched")
    assert authz.check(None, PUT).allowed  # plaintext: nothing to deny it by
    assert not authz.check(LEGACY, GET).allowed


def test_an_allow_filter_without_policies_denies_everything():
    authz = decode(raw("allow", rbac_pb2.RBAC(rules=config_pb2.RBAC(action=ALLOW))))
    assert not authz.check(FRONTEND, GET).allowed
    assert decode(raw("deny", rbac_pb2.RBAC(rules=config_pb2.RBAC(action=DENY)))).check(
        FRONTEND, GET).allowed


def test_a_policy_with_an_empty_side_matches_nothing():
    assert not decode(rbac("a", ALLOW, p=policy([], [ANY_PERM]))).check(FRONTEND, GET).allowed
    assert not decode(rbac("a", ALLOW, p=policy([ANY_ID], []))).check(FRONTEND, GET).allowed


@pytest.mark.parametrize("config", [
    rbac_pb2.RBAC(),  # rules absent: a no-op (Envoy)
    rbac_pb2.RBAC(shadow_rules=config_pb2.RBAC(action=DENY, policies={  # shadow only logs
        "all": policy([ANY_ID], [ANY_PERM])})),
    rbac_pb2.RBAC(rules=config_pb2.RBAC(action=LOG, policies={  # gRFC A41: ignored
        "all": policy([ANY_ID], [ANY_PERM])})),
], ids=["no-rules", "shadow-rules-only", "log-action"])
def test_filters_that_decide_nothing_are_no_ops(config):
    assert decode_rbac_filters([raw("rbac", config), ROUTER]) is None


def test_decoding_the_same_filters_twice_gives_equal_policies():
    def filters() -> list[hcm_pb2.HttpFilter]:
        return [rbac("deny", DENY, a=policy([who(regex="spiffe://.*/sa/old")], [ANY_PERM]),
                     b=policy([who(exact=LEGACY)], [path(prefix="/x.")])), ROUTER]
    assert decode_rbac_filters(filters()) == decode_rbac_filters(filters())
    assert decode_rbac_filters(filters()) != only(DENY, who(exact=LEGACY))


# ------------------------------------------------------------ principals

@pytest.mark.parametrize(("principal", "caller", "expected"), [
    (who(exact=FRONTEND), FRONTEND, True),
    (who(exact=FRONTEND), LEGACY, False),
    (who(exact=FRONTEND), None, False),  # plaintext
    (who(exact=FRONTEND), FRONTEND.upper(), False),
    (who(exact=FRONTEND, ignore_case=True), FRONTEND.upper(), True),
    (who(prefix="spiffe://cluster.local/ns/legacy/"), LEGACY, True),
    (who(prefix="SPIFFE://cluster.local/ns/legacy/", ignore_case=True), LEGACY, True),
    (who(suffix="/sa/old"), LEGACY, True),
    (who(suffix="/SA/OLD", ignore_case=True), LEGACY, True),
    (who(contains="/ns/legacy/"), LEGACY, True),
    (who(contains="/ns/legacy/"), FRONTEND, False),
    (who(contains="/NS/LEGACY/", ignore_case=True), LEGACY, True),
    (who(regex=r"spiffe://cluster\.local/ns/[^/]*/sa/frontend"), FRONTEND, True),
    (who(regex=r"spiffe://cluster\.local/ns/[^/]*/sa/frontend"), LEGACY, False),
    (who(regex=r"cluster\.local"), FRONTEND, False),  # the whole value must match
    (who(regex=r"SPIFFE://.*", ignore_case=True), FRONTEND, False),  # no effect on regex
    (who(regex=".*"), None, False),
    (SIGNED_IN, LEGACY, True),
    (SIGNED_IN, None, False),
    (ANY_ID, None, True),
    (Principal(not_id=who(exact=LEGACY)), FRONTEND, True),
    (Principal(not_id=who(exact=LEGACY)), LEGACY, False),
    (Principal(not_id=who(exact=LEGACY)), None, True),
    (Principal(not_id=SIGNED_IN), None, True),
    (Principal(and_ids=Principal.Set(ids=[who(prefix="spiffe://cluster.local/"),
                                          who(suffix="/frontend")])), FRONTEND, True),
    (Principal(and_ids=Principal.Set(ids=[who(prefix="spiffe://cluster.local/"),
                                          who(suffix="/frontend")])), LEGACY, False),
    (Principal(or_ids=Principal.Set(ids=[who(exact=LEGACY), who(exact=FRONTEND)])),
     FRONTEND, True),
    (Principal(or_ids=Principal.Set(ids=[who(exact=LEGACY), who(exact=FRONTEND)])),
     None, False),
    (Principal(or_ids=Principal.Set(ids=[who(exact=LEGACY), ANY_ID])), None, True),
])
def test_principals(principal, caller, expected):
    assert only(ALLOW, principal=principal).check(caller, GET).allowed is expected


# ------------------------------------------------------------ permissions

@pytest.mark.parametrize(("permission", "method", "expected"), [
    (path(exact=GET), GET, True),
    (path(exact=GET), PUT, False),
    (path(prefix="/demo.Reviews/"), PUT, True),
    (path(prefix="/DEMO.reviews/", ignore_case=True), PUT, True),
    (path(suffix="/Get"), GET, True),
    (path(contains=".Reviews/"), GET, True),
    (path(regex=r"/demo\.[^/]*/Get"), GET, True),
    (path(regex=r"/demo\.[^/]*/Get"), PUT, False),
    (header(string_match=s(suffix="/Put")), PUT, True),
    (header(string_match=s(suffix="/Put")), GET, False),
    (header(exact_match=GET), GET, True),
    (header(prefix_match="/demo."), GET, True),
    (header(safe_regex_match=regex_pb2.RegexMatcher(regex=".*/G.t")), GET, True),
    (header(present_match=True), GET, True),
    (header(exact_match=GET, invert_match=True), GET, False),
    (header(exact_match=GET, invert_match=True), PUT, True),
    (Permission(not_rule=path(exact=GET)), GET, False),
    (Permission(not_rule=path(exact=GET)), PUT, True),
    (Permission(or_rules=Permission.Set(rules=[path(exact=GET), path(exact=PUT)])),
     PUT, True),
    (Permission(and_rules=Permission.Set(rules=[path(prefix="/demo."), path(suffix="/Get")])),
     GET, True),
    (Permission(and_rules=Permission.Set(rules=[path(prefix="/demo."), path(suffix="/Get")])),
     PUT, False),
    (Permission(and_rules=Permission.Set(rules=[ANY_PERM, Permission(
        not_rule=path(suffix="/Put"))])), PUT, False),
])
def test_permissions(permission, method, expected):
    assert only(ALLOW, permission=permission).check(FRONTEND, method).allowed is expected


def test_a_policy_needs_both_a_matching_caller_and_a_matching_method():
    authz = decode(rbac("allow", ALLOW, frontend_reads=policy(
        [who(exact=FRONTEND)], [path(suffix="/Get"), path(suffix="/List")])))
    assert authz.check(FRONTEND, GET).allowed
    assert not authz.check(FRONTEND, PUT).allowed
    assert not authz.check(LEGACY, GET).allowed


# ------------------------------------------------------------ what meshlib rejects

CEL = syntax_pb2.Expr(const_expr=syntax_pb2.Constant(bool_value=True))


@pytest.mark.parametrize(("filters", "message"), [
    ([rbac("r", ALLOW, p=policy([Principal(source_ip={})], [ANY_PERM]))],
     r"http_filters\[0\] \(r\): policy 'p': principals\[0\]: principal source_ip is not "
     "supported"),
    ([rbac("r", ALLOW, p=policy([Principal(header=rc_pb2.HeaderMatcher(name="x"))],
                                [ANY_PERM]))], "principal header is not supported"),
    ([rbac("r", ALLOW, p=policy([Principal(not_id=Principal(remote_ip={}))], [ANY_PERM]))],
     r"principals\[0\].not_id: principal remote_ip"),
    ([rbac("r", ALLOW, p=policy([Principal()], [ANY_PERM]))], r"principal \(unset\)"),
    ([rbac("r", ALLOW, p=policy([ANY_ID], [header(name="x-user", exact_match="a")]))],
     "header 'x-user' is not supported"),
    ([rbac("r", ALLOW, p=policy([ANY_ID], [Permission(destination_port=443)]))],
     "permission destination_port is not supported"),
    ([rbac("r", ALLOW, p=policy([ANY_ID], [Permission(
        and_rules=Permission.Set(rules=[]))]))], "and_rules: no rules"),
    ([rbac("r", ALLOW, p=policy([Principal(or_ids=Principal.Set())], [ANY_PERM]))],
     "or_ids: no ids"),
    ([rbac("r", ALLOW, p=policy([who(regex="(")], [ANY_PERM]))], "bad regex"),
    ([rbac("r", ALLOW, p=policy([who()], [ANY_PERM]))], r"string match \(unset\)"),
    ([rbac("r", ALLOW, p=policy([ANY_ID], [ANY_PERM], condition=CEL))],
     "CEL conditions are not supported"),
    ([raw("r", rbac_pb2.RBAC(matcher=matcher_pb2.Matcher()))], "'matcher' field"),
    ([raw("r", rbac_pb2.RBAC(rules=config_pb2.RBAC(action=DENY)), disabled=True)],
     "disabled RBAC filter"),
    ([raw("r", rbac_pb2.RBAC(rules=config_pb2.RBAC(action=7)))], "unknown RBAC action 7"),
    ([hcm_pb2.HttpFilter(name="r", config_discovery=config_source_pb2.ExtensionConfigSource(
        type_urls=["type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"]))],
     "ECDS"),
], ids=["source_ip", "principal-header", "nested-remote_ip", "empty-principal",
        "other-header", "destination_port", "empty-and", "empty-or", "bad-regex",
        "empty-string-matcher", "cel", "unified-matcher", "disabled", "unknown-action",
        "ecds"])
def test_what_cannot_be_enforced_exactly_is_rejected(filters, message):
    with pytest.raises(XdsError, match=message):
        decode_rbac_filters([*filters, ROUTER])


def test_other_filters_are_ignored():
    fault = hcm_pb2.HttpFilter(name="envoy.filters.http.fault", typed_config=any_pb2.Any(
        type_url="type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"))
    assert decode_rbac_filters([fault, ROUTER]) is None


# ------------------------------------------------------------ cost

def test_the_check_is_cheap():
    authz = decode(
        rbac("deny", DENY, **{f"d{i}": policy([who(prefix=f"spiffe://x/ns/n{i}/")],
                                               [ANY_PERM]) for i in range(3)}),
        rbac("allow", ALLOW, a=policy([who(exact=LEGACY)], [path(exact=PUT)]),
             b=policy([who(exact=FRONTEND)], [path(prefix="/demo.Reviews/")])))
    per_call = min(timeit.repeat(lambda: authz.check(FRONTEND, GET), number=2000,
                                 repeat=5)) / 2000
    print(f"\nauthorization check: {per_call * 1e6:.2f} µs per call")
    assert per_call < 20e-6, f"{per_call * 1e6:.1f} µs per check"  # ~1 µs; CI is noisy


# ------------------------------------------------------------ regex denial of service

ADVERSARIAL = "/api/" + "a/" * 4000 + "x"  # ~8 KB, just under the cap


def _export_rule(action: int) -> AuthorizationPolicy:
    """The control plane's translation of an AccessPolicy path with wildcards."""
    glob = Permission(url_path=path_pb2.PathMatcher(path=path_matcher("/api/*/*/*/export")))
    return only(action, permission=glob)


@pytest.mark.parametrize("action", [ALLOW, DENY])
def test_an_adversarial_path_against_a_wildcard_policy_is_decided_at_once(action):
    authz = _export_rule(action)
    assert len(ADVERSARIAL) <= MAX_MATCH_LENGTH
    started = time.perf_counter()
    decision = authz.check(FRONTEND, ADVERSARIAL)
    assert time.perf_counter() - started < 0.01
    assert decision.allowed is (action == DENY)
    assert authz.check(FRONTEND, "/api/v1/users/42/export").allowed is (action == ALLOW)


def test_an_adversarial_path_against_a_regex_is_decided_at_once():
    authz = only(ALLOW, permission=path(regex=r"/api/(.*)/(.*)/(.*)/export"))
    started = time.perf_counter()
    assert not authz.check(FRONTEND, ADVERSARIAL).allowed
    assert time.perf_counter() - started < 0.01


@pytest.mark.parametrize("action", [ALLOW, DENY])
def test_a_path_beyond_the_cap_is_denied_without_matching(action):
    authz = only(action, permission=path(regex="/api/.*"))
    long_path = "/api/" + "a" * MAX_MATCH_LENGTH
    decision = authz.check(FRONTEND, long_path)
    assert not decision.allowed  # a DENY regex that cannot match must not let it past
    assert decision.reason == f"path or principal longer than {MAX_MATCH_LENGTH} characters"
    assert not authz.check("spiffe://x/" + "a" * MAX_MATCH_LENGTH, "/api/x").allowed


@pytest.mark.parametrize("regex", [r"(a)\1", "(?=x)/api", "/api/++"])
def test_a_regex_re2_refuses_is_rejected(regex):
    for permission in (path(regex=regex), header(safe_regex_match=regex_pb2.RegexMatcher(
            regex=regex))):
        with pytest.raises(XdsError, match=r"permissions\[0\].*bad regex .*RE2 syntax"):
            decode_rbac_filters([rbac("r", ALLOW, p=policy([ANY_ID], [permission])), ROUTER])
    with pytest.raises(XdsError, match=r"principals\[0\].*bad regex"):
        decode_rbac_filters([rbac("r", ALLOW, p=policy([who(regex=regex)], [ANY_PERM])),
                             ROUTER])
