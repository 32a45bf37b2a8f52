"""Errors as the real API server reports them: ``Status`` objects with an HTTP code.

Messages follow k8s.io/apimachinery/pkg/api/errors, so clients (and people) that
parse them see what a real cluster says.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "status_object"]


def status_object(code: int, reason: str, message: str,
                  details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``meta/v1 Status`` of failure."""
    status: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Failure", "message": message, "reason": reason,
                              "code": code}
    if details:
        status["details"] = details
    return status


def _details(group_resource: str, name: str, **extra: Any) -> dict[str, Any]:
    plural, _, group = group_resource.partition(".")
    details: dict[str, Any] = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    details.update(extra)
    return details


class ApiError(Exception):
    """Raised inside the fake, answered as a ``Status`` with ``code``."""

    def __init__(self, code: int, reason: str, message: str,
                 details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        return status_object(self.code, self.reason, self.message, self.details)

    # Constructors named after the apimachinery helpers (errors.NewNotFound, ...).

    @classmethod
    def not_found(cls, group_resource: str, name: str) -> ApiError:
        return cls(404, "NotFound", f'{group_resource} "{name}" not found',
                   _details(group_resource, name))

    @classmethod
    def already_exists(cls, group_resource: str, name: str) -> ApiError:
        return cls(409, "AlreadyExists", f'{group_resource} "{name}" already exists',
                   _details(group_resource, name))

    @classmethod
    def conflict(cls, group_resource: str, name: str, why: str) -> ApiError:
        return cls(409, "Conflict",
                   f'Operation cannot be fulfilled on {group_resource} "{name}": {why}',
                   _details(group_resource, name))

    @classmethod
    def modified(cls, group_resource: str, name: str) -> ApiError:
        return cls.conflict(group_resource, name, "the object has been modified; please "
                            "apply your changes to the latest version and try again")

    @classmethod
    def invalid(cls, kind: str, group: str, name: str,
                causes: list[tuple[str, str, str]]) -> ApiError:
        """``causes``: (reason, field, message), e.g. ("FieldValueRequired",
        "spec.ports", "Required value")."""
        qualified = f"{kind}.{group}" if group else kind
        text = ", ".join(f"{f}: {m}" if f else m for _, f, m in causes)
        details: dict[str, Any] = {"name": name, "kind": kind,
                                   "causes": [{"reason": r, "message": m, "field": f}
                                              for r, f, m in causes]}
        if group:
            details["group"] = group
        return cls(422, "Invalid", f'{qualified} "{name}" is invalid: {text}', details)

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)

    @classmethod
    def expired(cls, message: str) -> ApiError:
        return cls(410, "Expired", message)

    @classmethod
    def method_not_allowed(cls, message: str) -> ApiError:
        return cls(405, "MethodNotAllowed", message)

    @classmethod
    def unsupported_media_type(cls, content_type: str) -> ApiError:
        return cls(415, "UnsupportedMediaType",
                   f'the body of the request was in an unknown format - accepted media '
                   f'types include: application/json-patch+json, '
                   f'application/merge-patch+json, application/apply-patch+yaml '
                   f'(got "{content_type}")')

    @classmethod
    def not_found_path(cls) -> ApiError:
        return cls(404, "NotFound", "the server could not find the requested resource",
                   {})
