"""Real gRPC backends for meshlib client tests, whose behaviour a test steers.

Each backend answers its name on ``/demo.Reviews/Get`` (unary), streams it three times
on ``List`` (server streaming), joins what it got on ``Upload`` (client streaming) and
echoes on ``Chat`` (bidi). A test makes it slow, fail the next N calls, or fail always.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "demo.Reviews"
GET, LIST, UPLOAD, CHAT = (f"/{SERVICE}/{m}" for m in ("Get", "List", "Upload", "Chat"))


@dataclass
class Backend:
    """One backend server and the knobs a test turns."""

    name: str
    port: int = 0
    delay: float = 0.0
    fail_next: int = 0
    fail_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    fail_always: bool = False
    calls: int = 0
    active: int = 0
    max_active: int = 0
    seen_timeouts: list[float | None] = field(default_factory=list)
    server: grpc.Server | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _enter(self, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            fail = self.fail_always or self.fail_next > 0
            if self.fail_next > 0:
                self.fail_next -= 1
        self.seen_timeouts.append(context.time_remaining())
        try:
            if self.delay:
                time.sleep(self.delay)
            if fail:
                context.abort(self.fail_code, f"{self.name} fails on purpose")
        finally:
            with self._lock:
                self.active -= 1

    def get(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._enter(context)
        return self.name.encode()

    def list(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._enter(context)
        for i in range(3):
            yield f"{self.name}:{i}".encode()

    def upload(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        self._enter(context)
        return b"+".join(requests) + b"@" + self.name.encode()

    def chat(self, requests: Iterator[bytes], context: grpc.ServicerContext
             ) -> Iterator[bytes]:
        self._enter(context)
        for request in requests:
            yield request + b"@" + self.name.encode()

    def start(self) -> Backend:
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Get": grpc.unary_unary_rpc_method_handler(self.get),
            "List": grpc.unary_stream_rpc_method_handler(self.list),
            "Upload": grpc.stream_unary_rpc_method_handler(self.upload),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers((handler,))
        health_servicer = health.HealthServicer()
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=0).wait()
            self.server = None
