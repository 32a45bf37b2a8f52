"""What passes between the HTTP layer and the API logic: a request, a response, a
watch to stream; and the small helpers every verb uses to answer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tests.kube._errors import ApiError
from tests.kube._objects import decode_json
from tests.kube._protobuf import PROTOBUF, decode_protobuf
from tests.kube._resources import ResourceType
from tests.kube._store import Watcher

__all__ = ["Request", "Response", "WatchPlan", "dump", "int_param", "json_response",
           "read_body", "served_as"]

Obj = dict[str, Any]
JSON = "application/json"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""


@dataclass
class Response:
    code: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class WatchPlan:
    """A watch to stream: its events come from ``watcher``; or one ERROR event."""

    rt: ResourceType
    watcher: Watcher | None
    deadline: float
    error: Obj | None = None
    as_table: bool = False


def dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(code: int, obj: Any, warnings: list[str] | None = None) -> Response:
    """A JSON answer; ``warnings`` go in ``Warning: 299`` headers, as the real server
    sends them (kubectl prints them)."""
    headers = {}
    if warnings:
        escaped = (w.replace("\\", "\\\\").replace('"', '\\"') for w in warnings)
        headers["Warning"] = ", ".join(f'299 - "{w}"' for w in escaped)
    return Response(code, dump(obj), headers=headers)


def served_as(rt: ResourceType, obj: Obj) -> Obj:
    """An object as served at ``rt``'s version (CRD versions share storage)."""
    if obj.get("apiVersion") == rt.api_version:
        return obj
    return {**obj, "apiVersion": rt.api_version}


def read_body(req: Request) -> Any:
    """The request body as JSON values, from JSON or Kubernetes protobuf."""
    if req.headers.get("content-type", "").startswith(PROTOBUF):
        return decode_protobuf(req.body)
    return decode_json(req.body)


def int_param(query: dict[str, str], name: str) -> int:
    """A non-negative integer query parameter (0 when absent); else 400."""
    try:
        value = int(query.get(name) or 0)
    except ValueError:
        raise ApiError.bad_request(f'invalid {name} "{query[name]}"') from None
    if value < 0:
        raise ApiError.bad_request(f'invalid {name} "{query[name]}"')
    return value
