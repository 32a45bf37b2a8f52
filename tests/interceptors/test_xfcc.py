"""``x-forwarded-client-cert``: parsed with Envoy's quoting, the last element's single
``URI`` taken, and trusted only from a loopback peer (the proxy beside the app)."""

from __future__ import annotations

import pytest

from interceptors.http import MeshWSGIMiddleware, _xfcc_identity
from meshlib.testing import config as c

WEB = "spiffe://cluster.local/ns/default/sa/web"
EVIL = "spiffe://cluster.local/ns/default/sa/evil"


@pytest.mark.parametrize(("header", "expected"), [
    (f"By=spiffe://cluster.local/ns/default/sa/app;Hash=ab;URI={WEB}", WEB),
    (f'By=x;URI="{WEB}";Subject="CN=a,O=b;c=d"', WEB),           # quoted ; , = are literal
    (f'URI={EVIL},By=x;URI="{WEB}"', WEB),                          # the nearest proxy's
    (f'URI="{WEB},URI={EVIL}"', None),                              # one quoted value
    (f'Subject="x\\",URI={EVIL}";URI={WEB}', WEB),                  # an escaped quote
    (f"URI={WEB};URI={EVIL}", None),                                 # two URIs: ambiguous
    ("URI=https://example.com/x", None),
    ("", None),
])
def test_xfcc_is_parsed_with_quotes(header, expected):
    assert _xfcc_identity(header) == expected


def whoami(environ, start_response):
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"ok"]


def test_xfcc_is_trusted_only_from_a_loopback_peer(mesh_control_plane, mesh):
    mesh_control_plane.apply(c.service("web", port=80, protocol="http"))
    app = MeshWSGIMiddleware(whoami, mesh=mesh, port=8080, host="127.0.0.1",
                             trust_forwarded_identity=True)
    header = f"By=x;URI={WEB}"
    local = {"HTTP_X_FORWARDED_CLIENT_CERT": header, "REMOTE_ADDR": "127.0.0.1"}
    remote = {"HTTP_X_FORWARDED_CLIENT_CERT": header, "REMOTE_ADDR": "10.1.2.3"}
    assert app._principal(local) == WEB
    assert app._principal(remote) is None  # anyone else can write that header
    plain = MeshWSGIMiddleware(whoami, mesh=mesh, port=8081, host="127.0.0.1")
    assert plain._principal(local) is None  # not trusted unless asked for
