"""gRPC's own xDS client driving traffic at the mesh, printing the live split.

This is what a service in any language does: point a channel at ``xds:///<service>``
with a bootstrap from ``meshctl bootstrap`` — no meshlib in the process::

    meshctl bootstrap --xds-address 127.0.0.1:15010 --node-id demo-client -o /tmp/b.json
    GRPC_XDS_BOOTSTRAP=/tmp/b.json python examples/native_client.py \
        --target xds:///reviews.default.svc.cluster.local:50051 --seconds 20

The whole client is::

    with grpc.insecure_channel("xds:///reviews.default.svc.cluster.local:50051") as ch:
        ch.unary_unary("/demo.Reviews/Get")(b"", timeout=2.0)

The program is ``native-client`` in :mod:`meshctl.demo_apps` (the one ``meshctl demo``
runs, shipped with meshctl); Ctrl-C stops it quietly.
"""

from __future__ import annotations

import sys

from meshctl.demo_apps import main

if __name__ == "__main__":
    sys.exit(main(["native-client", *sys.argv[1:]], prog=f"python {sys.argv[0]}"))
