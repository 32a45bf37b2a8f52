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
    sid = SpiffeId(DEFAULT_TRUST_DOMAIN, "shop", "Cart")
    assert SpiffeId.parse(sid.uri) == sid
    assert sid.dns_name == "cart.shop.serviceaccount.identity.cluster.local"
