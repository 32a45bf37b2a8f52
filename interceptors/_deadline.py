"""Deadline propagation as interceptors.

* Server side (:class:`DeadlineServerInterceptor`, :class:`AioDeadlineServerInterceptor`):
  while a handler runs, the meshlib deadline (:mod:`meshlib._deadline`) is the incoming
  call's deadline, so every mesh call the handler makes inherits what is left of it.
* Client side, for plain (non-mesh) channels (:class:`DeadlineClientInterceptor`,
  :class:`AioDeadlineClientInterceptor`): cap each call's timeout by the deadline in
  force, and fail fast with ``DeadlineExceededError`` once it has passed. Mesh channels
  do this themselves.

Example::

    server = grpc.server(pool, interceptors=[DeadlineServerInterceptor()])
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import time
from collections.abc import Callable
from typing import Any

import grpc

from interceptors._details import CallDetails, details_of
from meshlib._deadline import remaining, reset_deadline, set_deadline
from meshlib.errors import DeadlineExceededError

__all__ = [
    "AioDeadlineClientInterceptor",
    "AioDeadlineServerInterceptor",
    "DeadlineClientInterceptor",
    "DeadlineServerInterceptor",
]

_BEHAVIOURS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def _deadline_of(context: grpc.ServicerContext) -> float | None:
    left = context.time_remaining()
    return None if left is None else time.monotonic() + left


def _wrap_handler(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
    """The same handler, each behaviour run with the call's deadline in force."""
    if handler is None:
        return None
    for kind in _BEHAVIOURS:
        behaviour = getattr(handler, kind)
        if behaviour is None:
            continue
        if inspect.isasyncgenfunction(behaviour):
            wrapped = _async_gen(behaviour)
        elif inspect.iscoroutinefunction(behaviour):
            wrapped = _coroutine(behaviour)
        elif inspect.isgeneratorfunction(behaviour):
            wrapped = _generator(behaviour)
        else:
            wrapped = _plain(behaviour)
        return handler._replace(**{kind: wrapped})
    return handler


def _plain(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(behaviour)
    def run(request: Any, context: grpc.ServicerContext) -> Any:
        token = set_deadline(_deadline_of(context))
        try:
            return behaviour(request, context)
        finally:
            reset_deadline(token)
    return run


def _generator(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(behaviour)
    def run(request: Any, context: grpc.ServicerContext) -> Any:
        token = set_deadline(_deadline_of(context))
        try:
            yield from behaviour(request, context)
        finally:
            reset_deadline(token)
    return run


def _coroutine(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(behaviour)
    async def run(request: Any, context: grpc.ServicerContext) -> Any:
        token = set_deadline(_deadline_of(context))
        try:
            return await behaviour(request, context)
        finally:
            reset_deadline(token)
    return run


def _async_gen(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(behaviour)
    async def run(request: Any, context: grpc.ServicerContext) -> Any:
        token = set_deadline(_deadline_of(context))
        try:
            async for item in behaviour(request, context):
                yield item
        finally:
            reset_deadline(token)
    return run


class DeadlineServerInterceptor(grpc.ServerInterceptor):
    """Sync servers: handlers run with the incoming call's deadline in force."""

    def intercept_service(self, continuation: Callable[..., Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        return _wrap_handler(continuation(handler_call_details))


class AioDeadlineServerInterceptor(grpc.aio.ServerInterceptor):
    """``grpc.aio`` servers: handlers run with the incoming call's deadline in force."""

    async def intercept_service(self, continuation: Callable[..., Any],
                                handler_call_details: grpc.HandlerCallDetails) -> Any:
        return _wrap_handler(await continuation(handler_call_details))


def _capped(details: grpc.ClientCallDetails) -> CallDetails:
    call = details_of(details)
    left = remaining()
    if left is None:
        return call
    if left <= 0:
        raise DeadlineExceededError(
            f"{call.method}: the propagated deadline passed {-left:.3f}s ago")
    if call.timeout is None or left < call.timeout:
        return dataclasses.replace(call, timeout=left)
    return call


class DeadlineClientInterceptor(grpc.UnaryUnaryClientInterceptor,
                                grpc.UnaryStreamClientInterceptor,
                                grpc.StreamUnaryClientInterceptor,
                                grpc.StreamStreamClientInterceptor):
    """Plain sync channels: cap every call's timeout by the deadline in force."""

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_capped(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_capped(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_capped(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_capped(details), requests)


class AioDeadlineClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor,
                                   grpc.aio.UnaryStreamClientInterceptor):
    """Plain ``grpc.aio`` channels: cap unary and server-streaming calls' timeouts.

    (Each grpc.aio client interceptor costs ~55 µs a call; mesh channels do not use
    them.)
    """

    async def intercept_unary_unary(self, continuation: Any, details: Any,
                                    request: Any) -> Any:
        return await continuation(_aio_capped(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any,
                                     request: Any) -> Any:
        return await continuation(_aio_capped(details), request)


def _aio_capped(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    left = remaining()
    if left is None:
        return details
    if left <= 0:
        raise DeadlineExceededError(
            f"{details.method}: the propagated deadline passed {-left:.3f}s ago")
    if details.timeout is None or left < details.timeout:
        return details._replace(timeout=left)
    return details
