"""A Python service calling through meshlib: no proxy, no bootstrap file.

    python examples/meshlib_client.py --xds-address 127.0.0.1:15010 --target reviews

``meshlib.Mesh`` connects to the control plane; ``mesh.channel("reviews")`` is a
``grpc.Channel`` that routes (the GRPCRoute's weights and header matches), balances,
retries and ejects in-process. The split printed each second follows edits to the mesh
config live. The whole client is::

    with meshlib.Mesh(xds_address="127.0.0.1:15010", service="demo-client") as mesh:
        mesh.channel("reviews").unary_unary("/demo.Reviews/Get")(b"", timeout=2.0)

The program is ``meshlib-client`` in :mod:`meshctl.demo_apps` (the one ``meshctl demo``
runs, shipped with meshctl); Ctrl-C stops it quietly. Access logs (one JSON line a
call) follow the mesh's ``MeshConfig`` ``accessLogs.enabled`` (off in examples/mesh).
"""

from __future__ import annotations

import sys

from meshctl.demo_apps import main

if __name__ == "__main__":
    sys.exit(main(["meshlib-client", *sys.argv[1:]], prog=f"python {sys.argv[0]}"))
