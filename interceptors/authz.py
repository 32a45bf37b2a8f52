"""Authorization as server interceptors, sync and ``grpc.aio``, for plain servers.

Each call is checked before its handler runs, against the policy the callable
returns *now* (the xDS thread swaps it; reading it takes no lock). A denied call
ends with ``PERMISSION_DENIED`` and the fixed details ``permission denied``; the
reason is logged at INFO on ``meshlib.authz``, never sent to the caller. All four
call kinds are covered, with handlers written as functions, generators, coroutines
or async generators.

The guard itself is :func:`meshlib.security.guard_handler`: ``mesh.server()`` puts
it on each handler once, at registration, with no interceptor in the call path;
these interceptors put it on per call, for servers that are not mesh servers.

Example::

    server = grpc.server(pool, interceptors=[AuthorizationInterceptor(lambda: policy)])
    aserver = grpc.aio.server(interceptors=[AioAuthorizationInterceptor(lambda: policy)])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from meshlib.security import PolicySource, authorization_check, guard_handler

__all__ = ["AioAuthorizationInterceptor", "AuthorizationInterceptor"]


class AuthorizationInterceptor(grpc.ServerInterceptor):
    """Sync servers: check every call against ``policy()`` before its handler runs.

    ``policy`` returns the policy in force (None: allow all); it is called per call,
    so swapping what it returns applies to the next call.

    Example::

        current = [decode_rbac_filters(hcm.http_filters)]   # swapped by the xDS thread
        server = grpc.server(pool, interceptors=[AuthorizationInterceptor(
            lambda: current[0])])
    """

    def __init__(self, policy: PolicySource) -> None:
        self._policy = policy
        self._check = authorization_check(policy)

    def intercept_service(self, continuation: Callable[..., Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if self._policy() is None:  # nothing to enforce: no wrapper at all
            return handler
        return guard_handler(handler, self._check, _method(handler_call_details))


class AioAuthorizationInterceptor(grpc.aio.ServerInterceptor):
    """``grpc.aio`` servers: check every call against ``policy()`` before its handler
    runs (None: allow all).

    Example::

        server = grpc.aio.server(interceptors=[AioAuthorizationInterceptor(
            lambda: current[0])])
    """

    def __init__(self, policy: PolicySource) -> None:
        self._policy = policy
        self._check = authorization_check(policy)

    async def intercept_service(self, continuation: Callable[..., Any],
                                handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(handler_call_details)
        if self._policy() is None:
            return handler
        return guard_handler(handler, self._check, _method(handler_call_details))


def _method(details: grpc.HandlerCallDetails) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else method
