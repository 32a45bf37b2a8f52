"""An HTTP service in the test mesh: any WSGI or ASGI app, behind meshlib's middleware."""

from __future__ import annotations

from meshlib.testing import config as c


def web_app(environ, start_response):
    """A WSGI app (a Flask app's ``wsgi_app`` works the same way)."""
    start_response("200 OK", [("content-type", "text/plain")])
    return [f"page {environ['PATH_INFO']}".encode()]


def test_admin_paths_are_denied(mesh_control_plane, mesh_service, mesh):
    mesh_service.http("web", web_app)
    mesh_control_plane.apply(c.access_policy("web", c.deny(paths=["/admin/*"]), c.allow()))
    mesh_control_plane.wait_synced()
    with mesh.http_client(timeout=5) as http:
        assert http.get("http://web/products").text == "page /products"
        assert http.get("http://web/admin/users").status_code == 403
