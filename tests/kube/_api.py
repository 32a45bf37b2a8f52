"""Requests in, responses out: the API server's routing and verbs, without sockets.

``Api.handle(Request)`` returns a :class:`Response`, or for ``?watch=1`` a
:class:`WatchPlan` the HTTP layer streams. Paths, verbs and answers follow
https://kubernetes.io/docs/reference/using-api/api-concepts/.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from tests.kube._discovery import VERSION_INFO, Registry
from tests.kube._errors import ApiError
from tests.kube._objects import Writer, decode_json, now_rfc3339
from tests.kube._patch import (
    PatchError,
    apply_merge,
    fields_v1,
    json_merge_patch,
    json_patch,
    remove_fields,
    strategic_merge_patch,
)
from tests.kube._protobuf import PROTOBUF, decode_protobuf
from tests.kube._resources import ResourceType
from tests.kube._schema import schema_for
from tests.kube._selectors import field_selector, label_selector
from tests.kube._store import Store, Watcher
from tests.kube._table import table, wants_table
from tests.kube._tokens import TokenAuthority, TokenError

__all__ = ["Api", "Fault", "Request", "RequestRecord", "Response", "WatchPlan"]

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


@dataclass(frozen=True)
class RequestRecord:
    """One API request as the fake saw it (``verb`` as RBAC names it)."""

    verb: str
    resource: str  # "services", "grpcroutes/status", "" for non-resource paths
    group: str
    namespace: str | None
    name: str | None
    path: str
    query: dict[str, str]
    code: int = 0


@dataclass
class Fault:
    """Answer matching requests with ``code`` (until cleared, or ``times`` times)."""

    code: int = 503
    verbs: frozenset[str] | None = None
    resources: frozenset[str] | None = None
    times: int | None = None
    retry_after: int | None = None
    hits: int = 0

    def matches(self, record: RequestRecord) -> bool:
        if not record.resource:
            return False
        base = record.resource.split("/")[0]
        return ((self.verbs is None or record.verb in self.verbs)
                and (self.resources is None or record.resource in self.resources
                     or base in self.resources))

    def clear(self) -> None:
        self.times = 0


_REASONS = {500: "InternalError", 503: "ServiceUnavailable", 429: "TooManyRequests",
            504: "Timeout", 401: "Unauthorized", 403: "Forbidden"}


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _out(rt: ResourceType, obj: Obj) -> Obj:
    """An object as served at ``rt``'s version (CRD versions share storage)."""
    if obj.get("apiVersion") == rt.api_version:
        return obj
    return {**obj, "apiVersion": rt.api_version}


def _status_success(rt: ResourceType, obj: Obj) -> Obj:
    details: Obj = {"name": obj["metadata"]["name"], "kind": rt.plural,
                    "uid": obj["metadata"].get("uid")}
    if rt.group:
        details["group"] = rt.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": details}


def _encode_continue(rv: int, key: tuple[str, str]) -> str:
    token = {"v": "meta.k8s.io/v1", "rv": rv, "start": f"{key[0]}/{key[1]}\x00"}
    return base64.b64encode(_dump(token)).decode()


def _decode_continue(text: str) -> tuple[int, tuple[str, str]]:
    try:
        token = json.loads(base64.b64decode(text))
        ns, _, name = token["start"].rstrip("\x00").partition("/")
        return int(token["rv"]), (ns, name)
    except (ValueError, KeyError, TypeError):
        raise ApiError.bad_request("continue key is not valid: incorrect encoded start "
                                   "resourceVersion (version meta.k8s.io/v1)") from None


class Api:
    """The API server's behaviour over a store, a type registry and a token signer."""

    def __init__(self, store: Store, registry: Registry, tokens: TokenAuthority, *,
                 address: Callable[[], str], watch_timeout: float = 1800.0,
                 bearer_token: str | None = None) -> None:
        self.store = store
        self.registry = registry
        self.tokens = tokens
        self.writer = Writer(store, registry)
        self.address = address
        self.watch_timeout = watch_timeout
        self.bearer_token = bearer_token
        self.faults: list[Fault] = []
        self.records: list[RequestRecord] = []
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    # Entry point ----------------------------------------------------------------------

    def handle(self, req: Request, *, record: bool = True) -> Response | WatchPlan:
        rec = self._classify(req)
        try:
            if record:
                self._check_auth(req)
                self._check_faults(rec)
            result = self._route(req, rec)
        except ApiError as err:
            result = Response(err.code, _dump(err.status()), headers=err.headers)
        if record:
            code = result.code if isinstance(result, Response) else 200
            with self._lock:
                self.records.append(RequestRecord(**{**rec.__dict__, "code": code}))
                self.counts[(rec.verb, rec.resource)] += 1
        return result

    def _check_auth(self, req: Request) -> None:
        if self.bearer_token is None:
            return
        auth = req.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if token and token == self.bearer_token:
            return
        if token:
            try:
                self.tokens.verify(token, [self.tokens.issuer])
                return
            except TokenError:
                pass
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def _check_faults(self, rec: RequestRecord) -> None:
        with self._lock:
            self.faults = [f for f in self.faults if f.times is None or f.times > 0]
            fault = next((f for f in self.faults if f.matches(rec)), None)
            if fault is None:
                return
            fault.hits += 1
            if fault.times is not None:
                fault.times -= 1
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
        reason = _REASONS.get(fault.code, "InternalError")
        raise ApiError(fault.code, reason, f"injected fault: {reason}", headers=headers)

    # Routing --------------------------------------------------------------------------

    def _classify(self, req: Request) -> RequestRecord:
        """Which verb on which resource a request is (as RBAC sees it)."""
        parts = [p for p in req.path.split("/") if p]
        blank = RequestRecord("get", "", "", None, None, req.path, req.query)
        if parts[:1] == ["api"] and len(parts) >= 3:
            group, rest = "", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            group, rest = parts[1], parts[3:]
        else:
            return blank
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (
                len(rest) == 3 and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if plural == "namespaces" and name:
            namespace = name
        watching = req.query.get("watch") in ("1", "true")
        verb = {
            "GET": "get" if name else ("watch" if watching else "list"),
            "POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }.get(req.method, req.method.lower())
        resource = f"{plural}/{sub}" if sub else plural
        return RequestRecord(verb, resource, group, namespace, name, req.path, req.query)

    def _route(self, req: Request, rec: RequestRecord) -> Response | WatchPlan:
        parts = [p for p in req.path.split("/") if p]
        if not rec.resource:
            return self._non_resource(req, parts)
        version = parts[1] if parts[0] == "api" else parts[2]
        plural, _, sub = rec.resource.partition("/")
        rt = self.registry.lookup(rec.group, version, plural)
        if rt is None:
            raise ApiError.not_found_path()
        ns = rec.namespace if rt.namespaced else None
        if rt.namespaced and rec.namespace is None and rec.verb not in ("list", "watch"):
            raise ApiError.not_found_path()
        if sub and sub not in ("status", "token"):
            raise ApiError.not_found_path()
        if sub == "status" and not rt.status:
            raise ApiError.not_found_path()
        if sub == "token" and rt.plural != "serviceaccounts":
            raise ApiError.not_found_path()
        if rt.plural == "namespaces":
            ns = None
        name = rec.name
        method = req.method
        if not rt.stored:
            if method != "POST":
                raise ApiError.method_not_allowed("the server does not allow this method on "
                                                  "the requested resource")
            return self._token_review(req)
        if method == "GET" and name:
            obj = _out(rt, self.writer.current(rt, ns, name))
            if wants_table(req.headers.get("accept", "")):
                return self._json(200, table(rt, [obj], {
                    "resourceVersion": obj["metadata"]["resourceVersion"]}))
            return self._json(200, obj)
        if method == "GET":
            return self._watch(rt, ns, req) if rec.verb == "watch" else self._list(rt, ns, req)
        if method == "POST" and sub == "token" and name:
            return self._token_request(rt, ns, name, req)
        if method == "POST" and not name:
            return self._create(rt, ns, req)
        if method == "PUT" and name:
            return self._update(rt, ns, name, sub or None, req)
        if method == "PATCH" and name:
            return self._patch(rt, ns, name, sub or None, req)
        if method == "DELETE" and name:
            return self._delete(rt, ns, name, req)
        if method == "DELETE":
            return self._delete_collection(rt, ns, req)
        raise ApiError.method_not_allowed("the server does not allow this method on the "
                                          "requested resource")

    def _non_resource(self, req: Request, parts: list[str]) -> Response:
        if req.method != "GET":
            raise ApiError.not_found_path()
        path = "/".join(parts)
        if path == "api":
            return self._json(200, self.registry.api_versions(self.address()))
        if path == "apis":
            return self._json(200, self.registry.api_group_list())
        if len(parts) == 2 and parts[0] == "apis" and (doc := self.registry.api_group(parts[1])):
            return self._json(200, doc)
        if len(parts) == 2 and parts[0] == "api" \
                and (doc := self.registry.api_resource_list("", parts[1])):
            return self._json(200, doc)
        if len(parts) == 3 and parts[0] == "apis" \
                and (doc := self.registry.api_resource_list(parts[1], parts[2])):
            return self._json(200, doc)
        if path == "version":
            return self._json(200, VERSION_INFO)
        if path in ("healthz", "livez", "readyz"):
            return Response(200, b"ok", "text/plain; charset=utf-8")
        if path == "openapi/v3":
            return self._json(200, self.registry.openapi_root())
        if parts[:2] == ["openapi", "v3"] and len(parts) >= 4:
            gv = parts[2:]
            if gv[0] == "api":
                group, version = "", gv[1]
            else:
                group, version = gv[1], gv[2] if len(gv) > 2 else ""
            if self.registry.resources(group, version):
                _, body = self.registry.openapi_doc(group, version)
                return Response(200, body, JSON,
                                {"Cache-Control": "public, immutable", "Etag": '"fake"'})
        raise ApiError.not_found_path()

    # Reads ----------------------------------------------------------------------------

    @staticmethod
    def _json(code: int, obj: Any, warnings: list[str] | None = None) -> Response:
        headers = {}
        if warnings:
            escaped = (w.replace("\\", "\\\\").replace('"', '\\"') for w in warnings)
            headers["Warning"] = ", ".join(f'299 - "{w}"' for w in escaped)
        return Response(code, _dump(obj), headers=headers)

    def _selector(self, rt: ResourceType, req: Request) -> Callable[[Obj], bool]:
        labels = label_selector(req.query.get("labelSelector"))
        fields = field_selector(req.query.get("fieldSelector"), rt.kind)
        return lambda obj: labels(obj) and fields(obj)

    def _list(self, rt: ResourceType, ns: str | None, req: Request) -> Response:
        q = req.query
        selects = self._selector(rt, req)
        rv, match = q.get("resourceVersion", ""), q.get("resourceVersionMatch", "")
        limit = int(q.get("limit") or 0)
        start: tuple[str, str] | None = None
        with self.store.lock:
            if q.get("continue"):
                if rv:
                    raise ApiError.bad_request("specifying resource version is not allowed "
                                               "when using continue")
                at, start = _decode_continue(q["continue"])
                if at < self.store.history_start:
                    raise ApiError.expired(
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue "
                        "parameter, or use the continue token in this response to retrieve "
                        "the remainder of the results. Continuing with the provided token "
                        "results in an inconsistent list - objects that were created, "
                        "modified, or deleted between the time the first chunk was returned "
                        "and now may show up in the list.")
            elif match == "Exact":
                at = int(rv)
            else:
                at = self.store.rv
                if rv not in ("", "0") and int(rv) > self.store.rv:
                    raise ApiError(504, "Timeout", f"Too large resource version: {rv}, "
                                   f"current: {self.store.rv}", {"causes": [{
                                       "reason": "ResourceVersionTooLarge",
                                       "message": "Too large resource version"}],
                                       "retryAfterSeconds": 1})
                if rv == "0":
                    limit = 0  # served from the watch cache, which ignores limit
            items = self.store.items(rt.group_resource, ns, at=at)
        items = [o for o in items if selects(o)
                 and (start is None or (o["metadata"].get("namespace", ""),
                                        o["metadata"]["name"]) > start)]
        meta: Obj = {"resourceVersion": str(at)}
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            meta["continue"] = _encode_continue(at, (last.get("namespace", ""), last["name"]))
            if not q.get("labelSelector") and not q.get("fieldSelector"):
                meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if wants_table(req.headers.get("accept", "")):
            return self._json(200, table(rt, items, meta))
        if rt.custom:
            out = [_out(rt, o) for o in items]
        else:  # typed lists carry no kind/apiVersion per item
            out = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
                   for o in items]
        return self._json(200, {"kind": rt.list_kind, "apiVersion": rt.api_version,
                                "metadata": meta, "items": out})

    def _watch(self, rt: ResourceType, ns: str | None, req: Request) -> WatchPlan:
        q = req.query
        timeout = float(q.get("timeoutSeconds") or self.watch_timeout)
        deadline = time.monotonic() + timeout
        try:
            watcher = self.store.watch(
                rt.group_resource, ns, self._selector(rt, req), q.get("resourceVersion", ""),
                bookmarks=q.get("allowWatchBookmarks") in ("true", "1"),
                initial_events=q.get("sendInitialEvents") == "true")
        except ApiError as err:
            if err.code != 410:
                raise
            return WatchPlan(rt, None, deadline, err.status())
        return WatchPlan(rt, watcher, deadline,
                         as_table=wants_table(req.headers.get("accept", "")))

    # Writes ---------------------------------------------------------------------------

    @staticmethod
    def _body(req: Request) -> Any:
        """The request body as JSON values, from JSON or Kubernetes protobuf."""
        if req.headers.get("content-type", "").startswith(PROTOBUF):
            return decode_protobuf(req.body)
        return decode_json(req.body)

    def _decode(self, rt: ResourceType, req: Request, *, as_yaml: bool = False) -> Obj:
        body = req.body
        if as_yaml:
            try:
                obj = yaml.safe_load(body)
            except yaml.YAMLError as exc:
                raise ApiError.bad_request(f"error decoding YAML: {exc}") from None
        else:
            obj = self._body(req)
        if not isinstance(obj, dict):
            raise ApiError.bad_request("the body of the request must be a JSON object")
        if obj.get("apiVersion", rt.api_version) != rt.api_version:
            raise ApiError.bad_request(f"the API version in the data ({obj['apiVersion']}) "
                                       f"does not match the expected API version "
                                       f"({rt.api_version})")
        if obj.get("kind", rt.kind) != rt.kind:
            raise ApiError.bad_request(f"the kind in the data ({obj['kind']}) does not match "
                                       f"the expected kind ({rt.kind})")
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        return obj

    def _create(self, rt: ResourceType, ns: str | None, req: Request) -> Response:
        warnings: list[str] = []
        obj = self._decode(rt, req)
        stored = self.writer.create(rt, ns, obj, req.query, warnings)
        return self._json(201, _out(rt, stored), warnings)

    def _check_name(self, obj: Obj, name: str, ns: str | None, rt: ResourceType) -> None:
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            obj["metadata"] = meta = {}
        if meta.get("name", name) != name:
            raise ApiError.bad_request(f"the name of the object ({meta['name']}) does not "
                                       f"match the name on the URL ({name})")
        if rt.namespaced and meta.get("namespace", ns) != ns:
            raise ApiError.bad_request("the namespace of the provided object does not match "
                                       "the namespace sent on the request")

    def _update(self, rt: ResourceType, ns: str | None, name: str, sub: str | None,
                req: Request) -> Response:
        warnings: list[str] = []
        current = self.writer.current(rt, ns, name)
        obj = self._decode(rt, req)
        self._check_name(obj, name, ns, rt)
        rv = obj["metadata"].get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise ApiError.modified(rt.group_resource, name)
        if not rv and rt.custom:
            raise ApiError.invalid(rt.kind, rt.group, name, [(
                "FieldValueInvalid", "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update")])
        stored = self.writer.update(rt, current, obj, sub, req.query, warnings)
        return self._json(200, _out(rt, stored), warnings)

    def _patch(self, rt: ResourceType, ns: str | None, name: str, sub: str | None,
               req: Request) -> Response:
        ctype = req.headers.get("content-type", "").split(";")[0].strip()
        if ctype == "application/apply-patch+yaml":
            return self._apply(rt, ns, name, sub, req)
        current = self.writer.current(rt, ns, name)
        doc = decode_json(req.body)
        try:
            if ctype == "application/merge-patch+json":
                new = json_merge_patch(copy.deepcopy(current), doc)
            elif ctype == "application/json-patch+json":
                new = json_patch(current, doc)
            elif ctype == "application/strategic-merge-patch+json" and not rt.custom:
                new = strategic_merge_patch(copy.deepcopy(current), doc, schema_for(rt))
            else:
                raise ApiError.unsupported_media_type(ctype)
        except PatchError as err:
            if err.malformed:
                raise ApiError.bad_request(str(err)) from None
            raise ApiError(422, "Invalid", str(err)) from None
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the patch does not produce an object")
        self._check_name(new, name, ns, rt)
        rv = new["metadata"].get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise ApiError.modified(rt.group_resource, name)
        warnings: list[str] = []
        stored = self.writer.update(rt, current, copy.deepcopy(new), sub, req.query, warnings)
        return self._json(200, _out(rt, stored), warnings)

    def _apply(self, rt: ResourceType, ns: str | None, name: str, sub: str | None,
               req: Request) -> Response:
        """Server-side apply, approximated (see ``_patch``)."""
        manager = req.query.get("fieldManager")
        if not manager:
            raise ApiError.bad_request("PATCH with apply-patch requires fieldManager: "
                                       "fieldManager is required for apply requests")
        applied = self._decode(rt, req, as_yaml=True)
        self._check_name(applied, name, ns, rt)
        cursor = schema_for(rt)
        owned = fields_v1(applied, cursor)
        entry = {"manager": manager, "operation": "Apply", "apiVersion": rt.api_version,
                 "time": now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": owned}
        if sub:
            entry["subresource"] = sub
        warnings: list[str] = []
        key = self.writer.key(rt, ns, name)
        current = self.store.get(rt.group_resource, key)
        if current is None:
            if sub:
                raise ApiError.not_found(rt.group_resource, name)
            applied["metadata"]["name"] = name
            stored = self.writer.create(rt, ns, applied, req.query, warnings, [entry])
            return self._json(201, _out(rt, stored), warnings)
        rv = applied["metadata"].get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise ApiError.modified(rt.group_resource, name)
        managers = current["metadata"].get("managedFields") or []
        mine = next((m for m in managers if m.get("manager") == manager
                     and m.get("operation") == "Apply" and m.get("subresource") == sub), None)
        base = remove_fields(current, mine["fieldsV1"], owned) if mine else current
        new = apply_merge(base, applied, cursor)
        others = [m for m in managers if m is not mine]
        stored = self.writer.update(rt, current, copy.deepcopy(new), sub, req.query,
                                    warnings, [*others, entry])
        return self._json(200, _out(rt, stored), warnings)

    def _delete(self, rt: ResourceType, ns: str | None, name: str, req: Request) -> Response:
        current = self.writer.current(rt, ns, name)
        options = self._body(req) if req.body.strip() else {}
        stored = self.writer.delete(rt, current, options or {}, req.query)
        if rt.custom or rt.plural in ("services", "pods", "serviceaccounts") \
                or stored["metadata"].get("deletionTimestamp"):
            return self._json(200, _out(rt, stored))
        return self._json(200, _status_success(rt, stored))

    def _delete_collection(self, rt: ResourceType, ns: str | None, req: Request) -> Response:
        selects = self._selector(rt, req)
        for obj in self.store.items(rt.group_resource, ns):
            if selects(obj):
                with contextlib.suppress(ApiError):
                    self.writer.delete(rt, obj, {}, req.query)
        return self._json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Success"})

    # Tokens ---------------------------------------------------------------------------

    def _token_request(self, rt: ResourceType, ns: str | None, name: str,
                       req: Request) -> Response:
        sa = self.writer.current(rt, ns, name)
        body = self._body(req) or {}
        spec = dict(body.get("spec") or {})
        audiences = spec.get("audiences") or [self.tokens.issuer]
        seconds = int(spec.get("expirationSeconds") or 3600)
        if seconds < 600:
            raise ApiError.invalid("TokenRequest", "authentication.k8s.io", name, [(
                "FieldValueInvalid", "spec.expirationSeconds",
                f"Invalid value: {seconds}: may not specify a duration less than 10 minutes")])
        pod = None
        ref = spec.get("boundObjectRef")
        if ref and ref.get("kind") == "Pod":
            found = self.store.get("pods", (ns or "", ref.get("name", "")))
            if found is None:
                raise ApiError.not_found("pods", ref.get("name", ""))
            pod = (ref["name"], found["metadata"]["uid"])
        token, exp = self.tokens.mint(namespace=ns or "", service_account=name,
                                      service_account_uid=sa["metadata"]["uid"],
                                      audiences=audiences, expires_in=seconds, pod=pod)
        spec.update(audiences=audiences, expirationSeconds=seconds)
        return self._json(201, {
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": None},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))}})

    def review(self, token: str, audiences: list[str]) -> Obj:
        """The ``status`` of a TokenReview of ``token``."""
        audiences = audiences or [self.tokens.issuer]
        try:
            claims = self.tokens.verify(token, audiences)
            sa = self.store.get("serviceaccounts", (claims.namespace, claims.service_account))
            if sa is None:
                raise TokenError(f'invalid bearer token, serviceaccounts '
                                 f'"{claims.service_account}" not found')
            if sa["metadata"]["uid"] != claims.service_account_uid:
                raise TokenError(f"invalid bearer token, service account UID "
                                 f"({sa['metadata']['uid']}) does not match claim "
                                 f"({claims.service_account_uid})")
            extra = {"authentication.kubernetes.io/credential-id": [f"JTI={claims.jti}"]}
            if claims.pod:
                pod = self.store.get("pods", (claims.namespace, claims.pod[0]))
                if pod is None or pod["metadata"]["uid"] != claims.pod[1]:
                    raise TokenError(f'invalid bearer token, pods "{claims.pod[0]}" not found')
                extra["authentication.kubernetes.io/pod-name"] = [claims.pod[0]]
                extra["authentication.kubernetes.io/pod-uid"] = [claims.pod[1]]
        except TokenError as err:
            return {"user": {}, "error": f"[{err}]"}
        return {"authenticated": True, "audiences": list(claims.audiences), "user": {
            "username": claims.username, "uid": claims.service_account_uid,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{claims.namespace}",
                       "system:authenticated"],
            "extra": extra}}

    def _token_review(self, req: Request) -> Response:
        body = self._body(req) or {}
        if body.get("kind") not in (None, "TokenReview"):
            raise ApiError.bad_request(f"the kind in the data ({body['kind']}) does not match "
                                       f"the expected kind (TokenReview)")
        spec = body.get("spec") or {}
        if not spec.get("token"):
            raise ApiError.invalid("TokenReview", "authentication.k8s.io", "", [(
                "FieldValueRequired", "spec.token", "Required value")])
        status = self.review(spec["token"], list(spec.get("audiences") or ()))
        return self._json(201, {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                                "metadata": {"creationTimestamp": None}, "spec": spec,
                                "status": status})
