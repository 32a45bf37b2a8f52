"""Rebuilding a server's ``RpcMethodHandler`` around a wrapped behaviour.

Server-side concerns (authorization, deadlines, telemetry) wrap a handler's
behaviour in one of four ways — a plain function, a generator, a coroutine, an async
generator — and rebuild the handler of the same kind with the same (de)serializers.
``mesh.server()`` does it once per handler, at registration (no per-call
interceptor); ``interceptors`` do it per call for plain servers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import grpc

__all__ = ["HANDLER_FACTORIES", "Wrap", "rewrap_generic", "rewrap_handler"]

HANDLER_FACTORIES: dict[str, Callable[..., grpc.RpcMethodHandler]] = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}

# (plain, generator, coroutine, async generator): each takes a behaviour, returns one.
Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]


def rewrap_handler(handler: grpc.RpcMethodHandler | None, *, plain: Wrap, generator: Wrap,
                   coroutine: Wrap, async_gen: Wrap) -> grpc.RpcMethodHandler | None:
    """``handler`` with its behaviour passed through the wrapper of its shape."""
    if handler is None:
        return None
    for kind, factory in HANDLER_FACTORIES.items():
        behaviour = getattr(handler, kind)
        if behaviour is None:
            continue
        if inspect.isasyncgenfunction(behaviour):
            wrapped = async_gen(behaviour)
        elif inspect.iscoroutinefunction(behaviour):
            wrapped = coroutine(behaviour)  # also grpc.aio's context.write() style
        elif kind.endswith("_stream"):
            wrapped = generator(behaviour)
        else:
            wrapped = plain(behaviour)
        return factory(wrapped, request_deserializer=handler.request_deserializer,
                       response_serializer=handler.response_serializer)
    return handler


HandlerWrap = Callable[[Any, str], Any]  # (RpcMethodHandler, method path) -> handler


def rewrap_generic(handler: grpc.GenericRpcHandler, wrap: HandlerWrap,
                   wrap_other: HandlerWrap | None = None) -> grpc.GenericRpcHandler:
    """A generic handler whose method handlers pass through ``wrap`` once.

    A dictionary handler (what generated code and ``method_handlers_generic_handler``
    make) is rebuilt at once, keeping grpc's fast lookup; any other is wrapped, its
    wrapped handlers kept per method — through ``wrap_other`` when given, as the
    caller, not a registration, named those methods.
    """
    methods = getattr(handler, "_method_handlers", None)
    service = getattr(handler, "_name", None)
    if isinstance(methods, dict) and isinstance(service, str):
        return grpc.method_handlers_generic_handler(service, {
            path.rsplit("/", 1)[1]: wrap(h, path) for path, h in methods.items()})
    return _WrappedGeneric(handler, wrap_other or wrap)


class _WrappedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, wrap: HandlerWrap) -> None:
        self._inner = inner
        self._wrap = wrap
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = self._inner.service(handler_call_details)
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = None if handler is None else self._wrap(handler, method)
        if len(self._wrapped) < 4096:
            self._wrapped[method] = (handler, wrapped)
        return wrapped
