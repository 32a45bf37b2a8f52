"""Admission: may this caller call this server now?

One :class:`Admission` per server address, fed by the control plane (the server
Listener's RBAC filters and local rate limit), asked before every call by
``mesh.server()``'s handler guard (gRPC) and by the ASGI/WSGI middleware (HTTP):

1. authorization — the AccessPolicy rules (:class:`AuthorizationPolicy`) for the
   caller's SPIFFE ID and the method or path; a denial is logged on
   ``meshlib.authz`` with its reason, never told to the caller;
2. the local rate limit — one token bucket per caller identity; callers without an
   identity get one per source host when the protocol gives it (gRPC: the caller's
   real address, :func:`~meshlib.security.peer_address`, also behind a PERMISSIVE
   front), else share one.

Each protocol answers a refusal its own way: gRPC with ``PERMISSION_DENIED`` /
``RESOURCE_EXHAUSTED`` and a ``grpc-retry-pushback-ms`` trailer (gRFC A6), HTTP with
403 / 429 and ``Retry-After``.

Example::

    admission = Admission()
    admission.configure(policy, rate_limit=(100.0, 20))     # from the Listener
    if not admission.authorize(principal, "/demo.Reviews/Get", peer):
        ...                                                  # refuse: denied
    wait = admission.throttle(principal)                     # 0.0: go on
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from meshlib.resilience import RateLimit
from meshlib.security._authz import AuthorizationPolicy
from meshlib.security._peer import peer_address, peer_principal, source_of

__all__ = ["DENIAL", "DENIED", "Admission", "Refusal", "denied", "denied_call", "log_denial"]

log = logging.getLogger("meshlib.authz")

DENIED = "permission denied"  # the only details a denied caller gets
#: A gRPC call's refusal: the status and details to end it with.
Refusal = tuple[grpc.StatusCode, str]
#: How a denied gRPC call ends.
DENIAL: Refusal = (grpc.StatusCode.PERMISSION_DENIED, DENIED)
_MAX_BUCKETS = 10_000  # distinct callers tracked before the buckets start over


def log_denial(method: str, principal: str | None, peer: str, reason: str) -> None:
    """Log why a call was denied (INFO on ``meshlib.authz``)."""
    log.info("denied %s to %s (%s): %s", method, principal or "a caller without identity",
             peer, reason)


def denied(policy: AuthorizationPolicy, principal: str | None, method: str,
           peer: Callable[[], str], what: str = "") -> bool:
    """Whether ``policy`` denies ``principal`` (a SPIFFE ID, or None) calling
    ``method``; a denial is logged, naming ``what`` (default ``method``) and the
    ``peer()`` address (asked only then)."""
    decision = policy.check(principal, method)
    if decision.allowed:
        return False
    log_denial(what or method, principal, peer(), decision.reason)
    return True


def denied_call(policy: AuthorizationPolicy, principal: str | None, method: str,
                context: Any) -> bool:
    """:func:`denied` for a gRPC call: a denial is logged with the caller's real
    address (:func:`~meshlib.security.peer_address`), looked up only then."""
    decision = policy.check(principal, method)
    if decision.allowed:
        return False
    log_denial(method, principal, peer_address(context), decision.reason)
    return True


class Admission:
    """Authorization, then the local rate limit, for one server address.

    :meth:`configure` swaps the policy and limit (from the xDS thread); the checks
    read them without a lock.
    """

    def __init__(self) -> None:
        self.authorization: AuthorizationPolicy | None = None
        self.rate_limit: tuple[float, int] | None = None  # (tokens per second, burst)
        self._buckets: dict[str | None, RateLimit] = {}

    def configure(self, authorization: AuthorizationPolicy | None,
                  rate_limit: tuple[float, int] | None) -> None:
        """What the control plane says now; a changed rate limit starts every bucket
        afresh."""
        if rate_limit != self.rate_limit:
            self.rate_limit = rate_limit
            self._buckets = {}
        self.authorization = authorization

    def authorize(self, principal: str | None, method: str, peer: str,
                  what: str = "") -> bool:
        """Whether the policy lets ``principal`` (a SPIFFE ID, or None) call ``method``
        (a gRPC method path or an HTTP path); a denial is logged (naming ``what``,
        default ``method``)."""
        policy = self.authorization
        return policy is None or not denied(policy, principal, method, lambda: peer, what)

    def throttle(self, principal: str | None, source: str | None = None) -> float:
        """Take a token of ``principal``'s bucket — for a caller without an identity,
        of its ``source`` host's (None: the one shared bucket): 0.0 to go on, else the
        seconds until one is due (no rate limit: always 0.0)."""
        limit = self.rate_limit
        if limit is None:
            return 0.0
        key = principal if principal is not None else source
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._buckets = {}
            bucket = self._buckets[key] = RateLimit(limit[0], limit[1])
        return bucket.try_acquire()

    def check(self, method: str, context: Any) -> Refusal | None:
        """The gRPC admission of a call (a handler guard's ``Check``): None to go on,
        else ``PERMISSION_DENIED``, or ``RESOURCE_EXHAUSTED`` with a
        ``grpc-retry-pushback-ms`` trailer saying when to retry."""
        if self.authorization is None and self.rate_limit is None:
            return None
        principal = peer_principal(context)
        policy = self.authorization
        if policy is not None and denied_call(policy, principal, method, context):
            return DENIAL
        if self.rate_limit is None:
            return None
        wait = self.throttle(principal, source_of(context) if principal is None else None)
        if not wait:
            return None
        millis = max(1, round(wait * 1000))
        context.set_trailing_metadata((("grpc-retry-pushback-ms", str(millis)),))
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"rate limited: retry in {millis} ms"
