"""RBAC filters → AuthorizationPolicy → decisions, from real RBAC protos."""

from __future__ import annotations

import pytest
from envoy.config.rbac.v3 import rbac_pb2 as config_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2
from google.protobuf import any_pb2

from meshlib.errors import XdsError
from meshlib.security import decode_rbac_filters

FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"
LEGACY = "spiffe://cluster.local/ns/legacy/sa/old"
GET = "/demo.Reviews/Get"
PUT = "/demo.Reviews/Put"


def s(**kw) -> string_pb2.StringMatcher:  # type: ignore[no-untyped-def]
    if "regex" in kw:
        kw["safe_regex"] = regex_pb2.RegexMatcher(regex=kw.pop("regex"))
    return string_pb2.StringMatcher(**kw)


def who(**kw) -> config_pb2.Principal:  # type: ignore[no-untyped-def]
    return config_pb2.Principal(authenticated=config_pb2.Principal.Authenticated(
        principal_name=s(**kw)))


def path(**kw) -> config_pb2.Permission:  # type: ignore[no-untyped-def]
    return config_pb2.Permission(url_path=path_pb2.PathMatcher(path=s(**kw)))


ANY_ID = config_pb2.Principal(any=True)
ANY_PERM = config_pb2.Permission(any=True)


def rbac(name: str, action: int, **policies: config_pb2.Policy) -> hcm_pb2.HttpFilter:
    config = rbac_pb2.RBAC(rules=config_pb2.RBAC(action=action, policies=policies))
    packed = any_pb2.Any()
    packed.Pack(config)
    return hcm_pb2.HttpFilter(name=name, typed_config=packed)


def policy(principals, permissions) -> config_pb2.Policy:  # type: ignore[no-untyped-def]
    return config_pb2.Policy(principals=principals, permissions=permissions)


ALLOW, DENY = config_pb2.RBAC.ALLOW, config_pb2.RBAC.DENY


def router() -> hcm_pb2.HttpFilter:
    from envoy.extensions.filters.http.router.v3 import router_pb2
    packed = any_pb2.Any()
    packed.Pack(router_pb2.Router())
    return hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=packed)


def test_no_rbac_filter_allows_everything():
    assert decode_rbac_filters([router()]) is None


def test_deny_is_evaluated_before_allow():
    authz = decode_rbac_filters([
        rbac("deny", DENY, legacy=policy([who(prefix="spiffe://cluster.local/ns/legacy/")],
                                         [ANY_PERM])),
        rbac("allow", ALLOW, everyone=policy([ANY_ID], [ANY_PERM])),
        router()])
    assert authz is not None
    denied = authz.check(LEGACY, GET)
    assert not denied.allowed and "legacy" in denied.reason and "DENY" in denied.reason
    assert authz.check(FRONTEND, GET).allowed
    assert authz.check(None, GET).allowed  # plaintext: no principal to deny


@pytest.mark.parametrize(("principal", "method", "allowed"), [
    (FRONTEND, GET, True),
    (FRONTEND, PUT, False),            # method not allowed
    (LEGACY, GET, False),              # caller not allowed
    (None, GET, False),                # plaintext caller, identity rule
    ("spiffe://cluster.local/ns/default/sa/FRONTEND", GET, True),  # ignore_case
])
def test_allow_rules_need_a_matching_caller_and_method(principal, method, allowed):
    authz = decode_rbac_filters([rbac("allow", ALLOW, frontend=policy(
        [who(exact=FRONTEND, ignore_case=True)], [path(prefix="/demo.Reviews/G")]))])
    assert authz is not None
    decision = authz.check(principal, method)
    assert decision.allowed is allowed
    if not allowed:
        assert "no ALLOW policy" in decision.reason


@pytest.mark.parametrize(("matcher", "principal", "expected"), [
    (who(regex=r"spiffe://cluster\.local/ns/[^/]*/sa/frontend"), FRONTEND, True),
    (who(regex=r"spiffe://cluster\.local/ns/[^/]*/sa/frontend"), LEGACY, False),
    (who(suffix="/sa/old"), LEGACY, True),
    (who(contains="/ns/legacy/"), LEGACY, True),
    (who(contains="/ns/legacy/"), FRONTEND, False),
    (config_pb2.Principal(not_id=who(exact=LEGACY)), FRONTEND, True),
    (config_pb2.Principal(not_id=who(exact=LEGACY)), None, True),
    (config_pb2.Principal(and_ids=config_pb2.Principal.Set(
        ids=[who(prefix="spiffe://cluster.local/"), who(suffix="/frontend")])), FRONTEND, True),
    (config_pb2.Principal(or_ids=config_pb2.Principal.Set(
        ids=[who(exact=LEGACY), who(exact=FRONTEND)])), FRONTEND, True),
    (config_pb2.Principal(authenticated=config_pb2.Principal.Authenticated()), None, False),
    (config_pb2.Principal(authenticated=config_pb2.Principal.Authenticated()), LEGACY, True),
])
def test_principal_matchers(matcher, principal, expected):
    authz = decode_rbac_filters([rbac("allow", ALLOW, p=policy([matcher], [ANY_PERM]))])
    assert authz is not None and authz.check(principal, GET).allowed is expected


@pytest.mark.parametrize(("permission", "method", "expected"), [
    (path(exact=GET), GET, True),
    (path(regex=r"/demo\.[^/]*/Get"), GET, True),
    (path(regex=r"/demo\.[^/]*/Get"), PUT, False),
    (config_pb2.Permission(header=rc_pb2.HeaderMatcher(name=":path", string_match=s(
        suffix="/Put"))), PUT, True),
    (config_pb2.Permission(not_rule=path(exact=GET)), GET, False),
    (config_pb2.Permission(or_rules=config_pb2.Permission.Set(
        rules=[path(exact=GET), path(exact=PUT)])), PUT, True),
    (config_pb2.Permission(and_rules=config_pb2.Permission.Set(
        rules=[path(prefix="/demo."), path(suffix="/Get")])), PUT, False),
])
def test_permission_matchers(permission, method, expected):
    authz = decode_rbac_filters([rbac("allow", ALLOW, p=policy([ANY_ID], [permission]))])
    assert authz is not None and authz.check(FRONTEND, method).allowed is expected


@pytest.mark.parametrize(("principal", "permission", "message"), [
    (config_pb2.Principal(header=rc_pb2.HeaderMatcher(name="x")), ANY_PERM,
     "principal header is not supported"),
    (ANY_ID, config_pb2.Permission(header=rc_pb2.HeaderMatcher(name="x-user")),
     "header 'x-user' is not supported"),
    (who(regex="("), ANY_PERM, "bad regex"),
])
def test_what_cannot_be_enforced_is_rejected(principal, permission, message):
    with pytest.raises(XdsError, match=message):
        decode_rbac_filters([rbac("allow", ALLOW, p=policy([principal], [permission]))])


def test_a_filter_without_rules_is_a_no_op():
    packed = any_pb2.Any()
    packed.Pack(rbac_pb2.RBAC())
    assert decode_rbac_filters([hcm_pb2.HttpFilter(name="rbac", typed_config=packed)]) is None


def test_the_check_is_cheap():
    import timeit
    authz = decode_rbac_filters([
        rbac("deny", DENY, **{f"d{i}": policy([who(prefix=f"spiffe://x/ns/n{i}/")],
                                               [ANY_PERM]) for i in range(3)}),
        rbac("allow", ALLOW, a=policy([who(exact=LEGACY)], [path(exact=PUT)]),
             b=policy([who(exact=FRONTEND)], [path(prefix="/demo.Reviews/")]))])
    assert authz is not None
    per_call = min(timeit.repeat(lambda: authz.check(FRONTEND, GET), number=2000,
                                 repeat=5)) / 2000
    print(f"\nauthorization check: {per_call * 1e6:.2f} µs per call")
    assert per_call < 20e-6, f"{per_call * 1e6:.1f} µs per check"
