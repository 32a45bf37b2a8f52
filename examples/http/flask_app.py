"""An HTTP service in the mesh with Flask (any WSGI app works the same way).

    python examples/http/flask_app.py --port 8081 --xds-address 127.0.0.1:15010

The WSGI app is wrapped by :class:`interceptors.http.MeshWSGIMiddleware`: the
AccessPolicy of its Service (rules on paths; ``403``), the TrafficPolicy rate limit
(``429`` with ``Retry-After``), tracing, metrics and access logs. Calls it makes to
other services go through ``mesh.http_client()`` (HTTP) or ``mesh.channel()`` (gRPC).
"""

from __future__ import annotations

import argparse

from flask import Flask, jsonify

import meshlib
from interceptors.http import MeshWSGIMiddleware


def make_app(mesh: meshlib.Mesh, port: int) -> Flask:
    app = Flask("products")
    http = mesh.http_client(timeout=5.0)

    @app.get("/products/<int:product_id>")
    def product(product_id: int):  # type: ignore[no-untyped-def]
        reviews = http.get(f"http://reviews-http/reviews/{product_id}")
        return jsonify(id=product_id, reviews=reviews.json() if reviews.is_success else None)

    app.wsgi_app = MeshWSGIMiddleware(app.wsgi_app, mesh=mesh, port=port)  # type: ignore[method-assign]
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--xds-address", required=True)
    parser.add_argument("--service", default="products")
    args = parser.parse_args()
    mesh = meshlib.Mesh(args.xds_address, service=args.service)
    make_app(mesh, args.port).run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()
