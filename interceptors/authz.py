"""Authorization as server interceptors, sync and ``grpc.aio``.

Each call is checked before its handler runs, against the policy the callable
returns *now* (the xDS thread swaps it; reading it takes no lock). A denied call
ends with ``PERMISSION_DENIED`` and the generic details ``permission denied``; the
reason — peer, method, the policy that decided — is logged at INFO on
``meshlib.authz``, never sent to the caller.

Example::

    server = grpc.server(pool, interceptors=[AuthorizationInterceptor(lambda: policy)])
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc

from interceptors._deadline import _HANDLER_FACTORIES
from meshlib.security._authz import AuthorizationPolicy
from meshlib.security._peer import peer_principal

__all__ = ["AioAuthorizationInterceptor", "AuthorizationInterceptor"]

log = logging.getLogger("meshlib.authz")

DENIED = "permission denied"
PolicySource = Callable[[], AuthorizationPolicy | None]


def _denied(policy: AuthorizationPolicy, method: str, context: Any) -> bool:
    principal = peer_principal(context)
    decision = policy.check(principal, method)
    if decision.allowed:
        return False
    log.info("denied %s to %s (%s): %s", method, principal or "a plaintext peer",
             context.peer(), decision.reason)
    return True


def _guard(handler: grpc.RpcMethodHandler | None, policy: AuthorizationPolicy,
           method: str) -> grpc.RpcMethodHandler | None:
    """``handler`` with the check in front of its behaviour."""
    if handler is None:
        return None
    for kind, factory in _HANDLER_FACTORIES.items():
        behaviour = getattr(handler, kind)
        if behaviour is None:
            continue
        if inspect.isasyncgenfunction(behaviour):
            wrapped = _async_gen(behaviour, policy, method)
        elif inspect.iscoroutinefunction(behaviour):
            wrapped = _coroutine(behaviour, policy, method)
        elif kind.endswith("_stream"):
            wrapped = _generator(behaviour, policy, method)
        else:
            wrapped = _plain(behaviour, policy, method)
        return factory(wrapped, request_deserializer=handler.request_deserializer,
                       response_serializer=handler.response_serializer)
    return handler


def _plain(behaviour: Callable[..., Any], policy: AuthorizationPolicy, method: str
           ) -> Callable[..., Any]:
    @functools.wraps(behaviour)
    def run(request: Any, context: grpc.ServicerContext) -> Any:
        if _denied(policy, method, context):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, DENIED)
        return behaviour(request, context)
    return run


def _generator(behaviour: Callable[..., Any], policy: AuthorizationPolicy, method: str
               ) -> Callable[..., Any]:
    @functools.wraps(behaviour)
    def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        if _denied(policy, method, context):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, DENIED)
        yield from behaviour(request, context)
    return run


def _coroutine(behaviour: Callable[..., Any], policy: AuthorizationPolicy, method: str
               ) -> Callable[..., Any]:
    @functools.wraps(behaviour)
    async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if _denied(policy, method, context):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, DENIED)
        return await behaviour(request, context)
    return run


def _async_gen(behaviour: Callable[..., Any], policy: AuthorizationPolicy, method: str
               ) -> Callable[..., Any]:
    @functools.wraps(behaviour)
    async def run(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if _denied(policy, method, context):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, DENIED)
        async for response in behaviour(request, context):
            yield response
    return run


class AuthorizationInterceptor(grpc.ServerInterceptor):
    """Sync servers: check every call against ``policy()`` (None: allow all)."""

    def __init__(self, policy: PolicySource) -> None:
        self._policy = policy

    def intercept_service(self, continuation: Callable[..., Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        policy = self._policy()
        if policy is None:
            return handler
        return _guard(handler, policy, handler_call_details.method)


class AioAuthorizationInterceptor(grpc.aio.ServerInterceptor):
    """``grpc.aio`` servers: check every call against ``policy()`` (None: allow all)."""

    def __init__(self, policy: PolicySource) -> None:
        self._policy = policy

    async def intercept_service(self, continuation: Callable[..., Any],
                                handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(handler_call_details)
        policy = self._policy()
        if policy is None:
            return handler
        return _guard(handler, policy, handler_call_details.method)
