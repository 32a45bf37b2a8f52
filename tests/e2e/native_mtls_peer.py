"""gRPC's native xDS server or client with xDS-managed security (gRFC A29), one process.

gRPC reads its bootstrap (``GRPC_XDS_BOOTSTRAP``) once per process, so every workload
of the mTLS tests is a process of its own:

    native_mtls_peer.py server --name reviews-0 --port 50071
      an xDS server (credentials from xDS, plaintext fallback) answering
      /demo.Reviews/Get with "<name> <caller's SPIFFE ID or ->"; prints "started".
    native_mtls_peer.py client
      JSON lines on stdin, one result line each:
      {"op": "call", "target": "xds:///reviews:50051", "method": "/demo.Reviews/Get"}
        -> {"reply": "reviews-0 spiffe://..."} or {"code": "UNAVAILABLE", "details": "..."}
      {"op": "wait_for", "target": ..., "code": "PERMISSION_DENIED", "timeout": 10}
        -> the first result with that code (or reply, for code "OK"), or the last one
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from concurrent import futures

import grpc
import grpc.experimental

SERVICE = "demo.Reviews"
METHOD = f"/{SERVICE}/Get"


def serve(name: str, port: int) -> None:
    def get(request: bytes, context: grpc.ServicerContext) -> bytes:
        peer = context.auth_context().get("peer_spiffe_id", [b"-"])[0].decode()
        return f"{name} {peer}".encode()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), xds=True)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE, {"Get": grpc.unary_unary_rpc_method_handler(get)}),))
    # Security comes from the Listener's DownstreamTlsContext; without one, plaintext.
    creds = grpc.xds_server_credentials(grpc.insecure_server_credentials())
    server.add_secure_port(f"127.0.0.1:{port}", creds)
    server.start()
    print("started", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop(grace=0).wait()


_channels: dict[str, grpc.Channel] = {}


def call(cmd: dict) -> dict:
    target = cmd["target"]
    if target not in _channels:
        creds = grpc.xds_channel_credentials(
            grpc.experimental.insecure_channel_credentials())
        _channels[target] = grpc.secure_channel(target, creds)
    stub = _channels[target].unary_unary(cmd.get("method", METHOD))
    try:
        reply = stub(b"", timeout=cmd.get("timeout", 5.0), wait_for_ready=False)
        return {"code": "OK", "reply": reply.decode()}
    except grpc.RpcError as err:
        return {"code": err.code().name, "details": err.details()}


def wait_for(cmd: dict) -> dict:
    """Call until the result has ``code`` (the config took effect) or time runs out."""
    deadline = time.monotonic() + cmd.get("timeout", 10.0)
    while True:
        result = call({**cmd, "timeout": 2.0})
        if result["code"] == cmd["code"] or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def drive() -> None:
    ops = {"call": call, "wait_for": wait_for}
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        print(json.dumps(ops[cmd["op"]](cmd)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--name", default="server")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.role == "server":
        serve(args.name, args.port)
    else:
        drive()


if __name__ == "__main__":
    main()
