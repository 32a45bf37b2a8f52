"""SpiffeId: strict parsing, the URI and DNS forms (moved from the CA's tests)."""

from __future__ import annotations

import pytest

from meshlib.contract import DEFAULT_TRUST_DOMAIN, SpiffeId


def test_spiffe_ids_parse_strictly():
    sid = SpiffeId.parse("spiffe://cluster.local/ns/shop/sa/cart")
    assert (sid.trust_domain, sid.namespace, sid.service_account) == (
        "cluster.local", "shop", "cart")
    assert str(sid) == "spiffe://cluster.local/ns/shop/sa/cart"
    for bad in ("http://x/ns/a/sa/b", "spiffe://Cluster.local/ns/a/sa/b",
                "spiffe://td/ns/a/sa/b/c", "spiffe://td/ns/../sa/b", "spiffe://td:80/ns/a/sa/b",
                "spiffe://td/ns/a/sa/b?x=1", "spiffe://td/sa/a/ns/b"):
        with pytest.raises(ValueError):
            SpiffeId.parse(bad)


def test_the_uri_parses_back_and_the_dns_form_is_linkerds():
    sid = SpiffeId(DEFAULT_TRUST_DOMAIN, "shop", "cart")
    assert SpiffeId.parse(sid.uri) == sid
    assert sid.dns_name == "cart.shop.serviceaccount.identity.cluster.local"


@pytest.mark.parametrize(("namespace", "account"), [
    ("shop", "Cart"),             # would share cart's DNS name
    ("shop", "api.payments"),     # would share payments.shop/api's DNS name
    ("payments.shop", "api"),
    ("Shop", "cart"),
    ("shop", "-cart"), ("shop", "cart-"), ("shop", "car_t"), ("shop", "a" * 64),
    ("", "cart"), (".", "cart"), ("..", "cart"),
])
def test_segments_are_dns_labels_so_dns_names_never_collide(namespace, account):
    with pytest.raises(ValueError, match="must be a DNS-1123 label"):
        SpiffeId(DEFAULT_TRUST_DOMAIN, namespace, account)
    with pytest.raises(ValueError):
        SpiffeId.parse(f"spiffe://cluster.local/ns/{namespace}/sa/{account}")


def test_every_valid_identity_has_its_own_dns_name():
    ids = [SpiffeId(DEFAULT_TRUST_DOMAIN, ns, sa)
           for ns in ("shop", "payments", "a", "a-b", "x" * 63)
           for sa in ("api", "cart", "0", "a-b", "y" * 63)]
    assert len({sid.dns_name for sid in ids}) == len(ids)
