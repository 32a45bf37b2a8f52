"""Per-call context shared by decorators, interceptors and mesh channels.

``RETRIES_OWNED`` is set while a :func:`meshlib.retry` decorator (or a retry
interceptor) drives attempts: mesh channels called inside it make one attempt per
call and leave retrying to it, so a local policy and the control plane's policy never
multiply (3 local × 3 mesh attempts would be 9 calls to a struggling service).
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["RETRIES_OWNED"]

RETRIES_OWNED: ContextVar[bool] = ContextVar("meshlib_retries_owned", default=False)
