"""Table tests of authorization translation: AccessPolicy rules → RBAC HTTP filters."""

from __future__ import annotations

import pytest
import re2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2

from tests.xds_server.translate.model_builders import (
    access_policy,
    access_rule,
    endpoint,
    endpoint_slice,
    mesh,
    service,
)
from tests.xds_server.translate.reference_check import hcm_of, hcms_of
from xds_server.model import AccessRule, MeshConfig
from xds_server.node import NodeGroup
from xds_server.resources import LISTENER
from xds_server.translate import build_resources
from xds_server.translate.rbac import (
    identity_matcher,
    namespace_matcher,
    path_matcher,
    rbac_filters,
    rule_policy,
    service_account_matcher,
)

SERVER = "grpc/server?xds.resource.listening_address="
TD = "cluster.local"
RBAC_URL = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
ROUTER = "envoy.filters.http.router"
FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"


def matches(matcher, value: str) -> bool:
    """What gRPC and Envoy do with a StringMatcher (RE2 full match for regexes)."""
    kind = matcher.WhichOneof("match_pattern")
    if kind == "exact":
        return value == matcher.exact
    if kind == "prefix":
        return value.startswith(matcher.prefix)
    assert kind == "safe_regex", kind
    return re2.fullmatch(matcher.safe_regex.regex, value) is not None


def kind_of(matcher) -> tuple[str, str]:
    kind = matcher.WhichOneof("match_pattern")
    return kind, matcher.safe_regex.regex if kind == "safe_regex" else getattr(matcher, kind)


def decoded(filters) -> list[tuple[str, str, list[str]]]:
    """(filter name, action, policy names) of RBAC filters."""
    out = []
    for f in filters:
        assert f.typed_config.type_url == RBAC_URL
        config = rbac_filter_pb2.RBAC()
        assert f.typed_config.Unpack(config)
        action = rbac_pb2.RBAC.Action.Name(config.rules.action)
        out.append((f.name, action, sorted(config.rules.policies)))
    return out


# ---------------------------------------------------------------------- matchers


@pytest.mark.parametrize(("pattern", "kind"), [
    (FRONTEND, ("exact", FRONTEND)),
    ("*", ("prefix", "spiffe://")),
    ("spiffe://cluster.local/ns/default/*", ("prefix", "spiffe://cluster.local/ns/default/")),
    ("spiffe://cluster.local/ns/*/sa/frontend",
     ("safe_regex", r"spiffe://cluster\.local/ns/.*/sa/frontend")),
    ("spiffe://a+b.io/ns/x/sa/*-v(1)",
     ("safe_regex", r"spiffe://a\+b\.io/ns/x/sa/.*-v\(1\)")),
])
def test_identity_matcher_kinds(pattern, kind):
    assert kind_of(identity_matcher(pattern)) == kind


@pytest.mark.parametrize(("account", "kind"), [
    ("frontend", ("exact", "spiffe://cluster.local/ns/shop/sa/frontend")),
    ("default/frontend", ("exact", FRONTEND)),
    ("default/*", ("prefix", "spiffe://cluster.local/ns/default/sa/")),
    ("*/frontend", ("safe_regex", r"spiffe://cluster\.local/ns/[^/]*/sa/frontend")),
    ("front*", ("safe_regex", r"spiffe://cluster\.local/ns/shop/sa/front[^/]*")),
    ("*", ("prefix", "spiffe://cluster.local/ns/shop/sa/")),
    ("prod-*/db.admin", ("safe_regex", r"spiffe://cluster\.local/ns/prod-[^/]*/sa/db\.admin")),
])
def test_service_account_matcher_kinds(account, kind):
    assert kind_of(service_account_matcher(account, "shop", TD)) == kind


@pytest.mark.parametrize(("namespace", "kind"), [
    ("shop", ("prefix", "spiffe://cluster.local/ns/shop/sa/")),
    ("prod-*", ("safe_regex", r"spiffe://cluster\.local/ns/prod-[^/]*/sa/[^/]*")),
    ("*", ("safe_regex", r"spiffe://cluster\.local/ns/[^/]*/sa/[^/]*")),
])
def test_namespace_matcher_kinds(namespace, kind):
    assert kind_of(namespace_matcher(namespace, TD)) == kind


@pytest.mark.parametrize(("pattern", "kind"), [
    ("/demo.Reviews/Get", ("exact", "/demo.Reviews/Get")),
    ("/demo.Reviews/*", ("prefix", "/demo.Reviews/")),
    ("/demo.*/Get", ("safe_regex", r"/demo\..*/Get")),
    ("*", ("prefix", "/")),
    ("/api/v1/*/items", ("safe_regex", "/api/v1/.*/items")),
])
def test_path_matcher_kinds(pattern, kind):
    assert kind_of(path_matcher(pattern)) == kind


# What each kind of pattern lets in, as gRPC and Envoy evaluate the matchers.
@pytest.mark.parametrize(("matcher", "value", "expected"), [
    (namespace_matcher("prod-*", TD), "spiffe://cluster.local/ns/prod-eu/sa/db", True),
    (namespace_matcher("prod-*", TD), "spiffe://cluster.local/ns/staging/sa/db", False),
    (namespace_matcher("prod-*", TD), "spiffe://other.td/ns/prod-eu/sa/db", False),
    (namespace_matcher("shop", TD), "spiffe://cluster.local/ns/shop/sa/cart", True),
    (namespace_matcher("shop", TD), "spiffe://cluster.local/ns/shopping/sa/cart", False),
    (service_account_matcher("*/frontend", "x", TD), FRONTEND, True),
    (service_account_matcher("*/frontend", "x", TD),
     "spiffe://cluster.local/ns/a/b/sa/frontend", False),
    (service_account_matcher("front*", "default", TD), FRONTEND, True),
    (service_account_matcher("front*", "default", TD),
     "spiffe://cluster.local/ns/default/sa/backend", False),
    (identity_matcher("spiffe://cluster.local/ns/*/sa/frontend"), FRONTEND, True),
    (identity_matcher("spiffe://cluster.local/ns/*/sa/frontend"),
     "spiffeXX//cluster.local/ns/x/sa/frontend", False),  # dots are literal
    (identity_matcher("*"), FRONTEND, True),
    (identity_matcher("*"), "", False),  # no certificate, no identity
    (path_matcher("/demo.*/Get"), "/demo.Reviews/Get", True),
    (path_matcher("/demo.*/Get"), "/demoXReviews/Get", False),
    (path_matcher("/demo.Reviews/*"), "/demo.Reviews/List", True),
    (path_matcher("/demo.Reviews/*"), "/demo.Ratings/List", False),
    # RE2 metacharacters in a pattern are literal (the regex must also be one RE2 takes)
    (path_matcher(r"/api/(a)\1/*/x{1001}"), r"/api/(a)\1/v2/x{1001}", True),
    (path_matcher(r"/api/(a)\1/*/x{1001}"), "/api/a/v2/" + "x" * 1001, False),
    (path_matcher("/a|b/*/[c]^$+?"), "/a|b/z/[c]^$+?", True),
])
def test_matcher_semantics(matcher, value, expected):
    assert matches(matcher, value) is expected


# ------------------------------------------------------------------------ policies


def test_empty_from_and_to_match_anyone_anything():
    policy = rule_policy(AccessRule(action="ALLOW"), "default", TD)
    assert [p.WhichOneof("identifier") for p in policy.principals] == ["any"]
    assert [p.WhichOneof("rule") for p in policy.permissions] == ["any"]


def test_principals_and_permissions_are_alternatives():
    rule = access_rule("ALLOW", from_identities=(FRONTEND,),
                       from_service_accounts=("batch", "ops/cron"), from_namespaces=("shop",),
                       to_methods=("/demo.Reviews/Get",), to_paths=("/healthz",))
    policy = rule_policy(rule, "default", TD)
    names = [kind_of(p.authenticated.principal_name) for p in policy.principals]
    assert names == [
        ("exact", FRONTEND),
        ("exact", "spiffe://cluster.local/ns/default/sa/batch"),
        ("exact", "spiffe://cluster.local/ns/ops/sa/cron"),
        ("prefix", "spiffe://cluster.local/ns/shop/sa/"),
    ]
    paths = [kind_of(p.url_path.path) for p in policy.permissions]
    assert paths == [("exact", "/demo.Reviews/Get"), ("exact", "/healthz")]


def test_a_star_method_is_any_method():
    rule = access_rule("DENY", to_methods=("/demo.Reviews/Get", "*"))
    policy = rule_policy(rule, "default", TD)
    assert [p.WhichOneof("rule") for p in policy.permissions] == ["any"]


def test_trust_domain_shapes_service_accounts_and_namespaces():
    rule = access_rule(from_service_accounts=("frontend",), from_namespaces=("shop",))
    policy = rule_policy(rule, "default", "corp.example")
    assert [p.authenticated.principal_name.WhichOneof("match_pattern") for p in
            policy.principals] == ["exact", "prefix"]
    assert policy.principals[0].authenticated.principal_name.exact == (
        "spiffe://corp.example/ns/default/sa/frontend")


@pytest.mark.parametrize(("actions", "expected"), [
    pytest.param((), [], id="no-rules-no-filters"),
    pytest.param(("ALLOW",), [("meshlib.rbac.allow", "ALLOW", ["default/p/rules[0]"])],
                 id="allow-only"),
    pytest.param(("DENY",), [("meshlib.rbac.deny", "DENY", ["default/p/rules[0]"])],
                 id="deny-only-the-rest-allowed"),
    pytest.param(("ALLOW", "DENY", "ALLOW"),
                 [("meshlib.rbac.deny", "DENY", ["default/p/rules[1]"]),
                  ("meshlib.rbac.allow", "ALLOW", ["default/p/rules[0]", "default/p/rules[2]"])],
                 id="deny-before-allow"),
])
def test_filters_deny_before_allow(actions, expected):
    policy = access_policy("reviews", *(access_rule(a) for a in actions), name="p")
    assert decoded(rbac_filters([policy], TD)) == expected


def test_rules_of_several_policies_keep_their_own_names_and_namespaces():
    a = access_policy("reviews", access_rule(from_service_accounts=("frontend",)), name="a")
    b = access_policy("reviews", access_rule(from_service_accounts=("frontend",)), name="b",
                      namespace="shop")
    (allow,) = rbac_filters([a, b], TD)
    config = rbac_filter_pb2.RBAC()
    allow.typed_config.Unpack(config)
    got = {name: p.principals[0].authenticated.principal_name.exact
           for name, p in config.rules.policies.items()}
    assert got == {"default/a/rules[0]": FRONTEND,
                   "shop/b/rules[0]": "spiffe://cluster.local/ns/shop/sa/frontend"}


# -------------------------------------------------------------- on server listeners


@pytest.mark.parametrize("group", [NodeGroup(kind="grpc"), NodeGroup(kind="grpc", tls=True),
                                   NodeGroup(kind="meshlib")], ids=lambda g: g.key)
def test_server_listeners_carry_rbac_before_the_router(group):
    svc = service("reviews")
    model = mesh(svc, endpoint_slice(svc, endpoint("10.0.0.1")),
                 access_policy("reviews", access_rule("ALLOW", from_namespaces=("default",)),
                               access_rule("DENY", from_service_accounts=("intruder",)),
                               mode="STRICT"),
                 mesh_config=MeshConfig(trust_domain="corp.example"))
    out = build_resources(model, group)[LISTENER]
    for key in ("10.0.0.1:8080", "0.0.0.0:8080", "[::]:8080"):
        filters = hcm_of(out[SERVER + key]).http_filters
        assert [f.name for f in filters] == ["meshlib.rbac.deny", "meshlib.rbac.allow", ROUTER]
        assert decoded(filters[:2]) == [
            ("meshlib.rbac.deny", "DENY", ["default/reviews/rules[1]"]),
            ("meshlib.rbac.allow", "ALLOW", ["default/reviews/rules[0]"])]
    # Clients never get RBAC: it is a server filter (gRFC A41).
    for name, listener in out.items():
        if not name.startswith(SERVER):
            for hcm in hcms_of(listener):
                assert all(f.typed_config.type_url != RBAC_URL for f in hcm.http_filters)


def test_a_service_without_rules_gets_only_the_router():
    svc = service("reviews")
    model = mesh(svc, endpoint_slice(svc, endpoint("10.0.0.1")),
                 access_policy("reviews", mode="STRICT"))
    listener = build_resources(model, NodeGroup(kind="grpc", tls=True))[LISTENER][
        SERVER + "10.0.0.1:8080"]
    assert [f.name for f in hcm_of(listener).http_filters] == [ROUTER]
