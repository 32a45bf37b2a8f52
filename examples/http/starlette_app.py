"""An HTTP service in the mesh with Starlette (FastAPI is the same: ``app.add_middleware``).

    python examples/http/starlette_app.py --port 8082 --xds-address 127.0.0.1:15010

``GET /reviews/{id}`` answers JSON. With ``--xds-address`` the app runs behind
:class:`interceptors.http.MeshASGIMiddleware`: the AccessPolicy of its Service
(rules on paths), the TrafficPolicy rate limit, tracing, metrics (``--metrics-port``)
and access logs, all from the control plane. Without it, it is a plain app (the
benchmarks use it so).
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def review(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["id"], "stars": 5,
                         "served_by": request.app.state.name})


def make_app(name: str) -> Starlette:
    app = Starlette(routes=[Route("/reviews/{id}", review)])
    app.state.name = name
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--name", default="reviews-http")
    parser.add_argument("--xds-address", help="the control plane; omit for a plain app")
    parser.add_argument("--service", default="reviews-http")
    parser.add_argument("--metrics-port", type=int, default=0)
    args = parser.parse_args()
    app = make_app(args.name)
    if args.xds_address:
        import meshlib
        from interceptors.http import MeshASGIMiddleware

        mesh = meshlib.Mesh(args.xds_address, service=args.service)
        app.add_middleware(MeshASGIMiddleware, mesh=mesh, port=args.port)
        if args.metrics_port:
            mesh.serve_metrics(args.metrics_port)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
