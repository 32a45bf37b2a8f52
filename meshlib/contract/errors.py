"""The errors both sides raise: the root of the hierarchy, config and xDS trouble.

::

    MeshError
    ├── ConfigError                 invalid mesh configuration (carries every Problem)
    ├── CertificateError            no workload certificate (the CA's status code if any)
    ├── BindError                   a server cannot listen on its address (also an OSError)
    └── XdsError                    xDS protocol or resource trouble (type URL, name)
        └── InconsistentSnapshotError   RDS/EDS references that do not resolve

:class:`Problem` is one validation problem (file, object, field, message), as
``meshctl check`` prints it. The library adds its call errors under
:class:`MeshError` in :mod:`meshlib.errors`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

__all__ = [
    "BindError",
    "CertificateError",
    "ConfigError",
    "InconsistentSnapshotError",
    "MeshError",
    "Problem",
    "XdsError",
]


class MeshError(Exception):
    """Root of every error meshlib and its control plane raise."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One validation problem: where (file, object, field) and what.

    ``str(problem)`` is the one line ``meshctl check`` prints, e.g.
    ``mesh/routes.yaml: GRPCRoute default/reviews: spec.rules[0].backendRefs[1].weight:
    must be an integer >= 0``.
    """

    message: str
    source: str = ""
    obj: str = ""  # "Kind namespace/name"
    field: str = ""

    def __str__(self) -> str:
        parts = [p for p in (self.source, self.obj, self.field) if p]
        return ": ".join([*parts, self.message])


class ConfigError(MeshError):
    """The configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(str(p) for p in self.problems)
        super().__init__(f"{len(self.problems)} configuration problem(s):\n{lines}")


class CertificateError(MeshError):
    """No workload certificate could be obtained or read; the message says why and
    ``code`` is the CA's gRPC status when it refused."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class BindError(MeshError, OSError):
    """A server cannot listen on ``address`` (``host:port``): the port is in use (by
    another control plane or service: ports are never shared), or the host is not an
    address of this machine. ``errno`` is the socket error's when known (e.g.
    ``errno.EADDRINUSE``). Also an :class:`OSError`, so ``except OSError`` still works.

    Example: ``cannot serve xDS on 127.0.0.1:15010: address already in use``.
    """

    def __init__(self, address: str, reason: str, *, what: str = "serve",
                 errno: int | None = None) -> None:
        super().__init__(f"cannot {what} on {address}: {reason}")
        self.address = address
        self.reason = reason
        self.errno = errno

    @classmethod
    def from_os_error(cls, address: str, err: OSError, *, what: str = "serve") -> BindError:
        """The :class:`BindError` of a failed ``bind()``: the reason is the errno's
        text (``address already in use``), without the wrappers asyncio adds."""
        # errno's own text, not asyncio's wrapper; resolver errors have errno < 0
        reason = os.strerror(err.errno) if err.errno and err.errno > 0 else (
            err.strerror or str(err))
        return cls(address, reason.lower(), what=what, errno=err.errno)


class XdsError(MeshError):
    """xDS trouble, with the type URL and resource name when known."""

    def __init__(self, message: str, *, type_url: str = "", resource_name: str = "") -> None:
        self.type_url = type_url
        self.resource_name = resource_name
        super().__init__(message)


class InconsistentSnapshotError(XdsError):
    """A snapshot references RDS/EDS names it does not contain.

    ``missing`` maps a type URL to the referenced names that are absent.
    """

    def __init__(self, missing: dict[str, tuple[str, ...]]) -> None:
        self.missing = missing
        detail = "; ".join(f"{t.rsplit('.', 1)[-1]}: {', '.join(n)}" for t, n in missing.items())
        super().__init__(f"snapshot references missing resources: {detail}")
