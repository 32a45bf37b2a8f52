"""A tiny gRPC backend for the demo and the tests: ``/demo.Reviews/Get`` answers its name.

Run one, or every gRPC backend a mesh config lists on this machine::

    python examples/reviews_server.py --name reviews-v1-a --port 50061
    python examples/reviews_server.py --config examples/mesh     # 50061, 50062, 50063

It uses a generic bytes-in/bytes-out handler, so any gRPC client in any language can
call it without generated code, and it serves the standard gRPC health service.
``--xds`` makes it an xDS-enabled server (``grpc.server(..., xds=True)``) that takes
its listener from the control plane named in ``GRPC_XDS_BOOTSTRAP``. A port already in
use is an error (no ``SO_REUSEPORT``); SIGTERM and Ctrl-C stop it quietly.

The code is ``meshctl.demo_apps`` (``backend``), which ``meshctl demo`` runs too.
"""

from __future__ import annotations

import sys

from meshctl.demo_apps import METHOD, SERVICE, main
from meshctl.demo_apps import make_backend as make_server

__all__ = ["METHOD", "SERVICE", "make_server"]

if __name__ == "__main__":
    sys.exit(main(["backend", *sys.argv[1:]], prog=f"python {sys.argv[0]}"))
