"""The example application of deploy/example-app: ``cart`` in namespace ``shop``.

Everything it knows about the mesh comes from :meth:`meshlib.Mesh.from_env`: the
Deployment sets the ``MESHLIB_*`` variables (the control plane's addresses, the mounted
root and projected token) and the downward API the pod's namespace and name. It serves
``/shop.Cart/Get`` with :meth:`meshlib.Mesh.server` (mTLS and authorization from the
control plane: the AccessPolicy in accesspolicy.yaml) and calls ``cart`` through the
mesh every few seconds, printing who answered whom::

    cart-6d4f9c7b8-x2x9q: cart-6d4f9c7b8-k7lqz answered spiffe://cluster.local/ns/shop/sa/cart

It runs from the meshlib image (deploy/Dockerfile), mounted from a ConfigMap; your own
application does the same with ``pip install meshlib`` in its image.
"""

from __future__ import annotations

import os
import signal
import threading

import grpc

import meshlib

SERVICE = "shop.Cart"
METHOD = f"/{SERVICE}/Get"
DEFAULT_PORT = 50051  # the Deployment's containerPort "grpc"


def handler(pod: str) -> grpc.GenericRpcHandler:
    """``/shop.Cart/Get``: answers which pod served the call, and for whom."""

    def get(request: bytes, context: grpc.ServicerContext) -> bytes:
        caller = meshlib.peer_identity(context) or "a caller without identity"
        return f"{pod} answered {caller}".encode()

    return grpc.method_handlers_generic_handler(
        SERVICE, {"Get": grpc.unary_unary_rpc_method_handler(get)})


def main() -> None:
    port = int(os.environ.get("CART_PORT", DEFAULT_PORT))
    interval = float(os.environ.get("CART_CALL_INTERVAL", "5"))
    pod = os.environ.get("POD_NAME", "cart")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with meshlib.Mesh.from_env() as mesh:
        server = mesh.server("cart", port=port)
        server.add_generic_rpc_handlers((handler(pod),))
        server.start()
        print(f"{pod}: serving {SERVICE} on port {server.port} ({server.mtls_mode}) as "
              f"{mesh.settings.service_account or mesh.settings.service} in "
              f"{mesh.settings.namespace}", flush=True)
        get = mesh.channel("cart").unary_unary(METHOD)
        while not stop.wait(interval):
            try:
                print(f"{pod}: {get(b'', timeout=5).decode()}", flush=True)
            except grpc.RpcError as err:
                print(f"{pod}: call failed: {err.code().name}: {err.details()}", flush=True)
        server.stop(grace=5).wait()


if __name__ == "__main__":
    main()
