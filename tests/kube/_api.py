"""Requests in, responses out, without sockets: authentication, injected faults, the
request log, and routing of API paths to discovery, reads (``_reads``), writes
(``_writes``) and tokens (``_auth``).

``Api.handle(Request)`` returns a :class:`Response`, or for ``?watch=1`` a
:class:`WatchPlan` the HTTP layer streams. Paths, verbs and answers follow
https://kubernetes.io/docs/reference/using-api/api-concepts/.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from tests.kube._auth import Auth
from tests.kube._discovery import VERSION_INFO, Registry
from tests.kube._errors import ApiError
from tests.kube._messages import Request, Response, WatchPlan, dump, json_response
from tests.kube._objects import Writer
from tests.kube._reads import Reads
from tests.kube._store import Store
from tests.kube._tokens import TokenAuthority
from tests.kube._writes import Writes

__all__ = ["Api", "Fault", "RequestRecord"]

JSON = "application/json"


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
        if not record.resource:  # discovery, /version, /openapi: only "everything" faults
            return self.verbs is None and self.resources is None
        base = record.resource.split("/")[0]
        return ((self.verbs is None or record.verb in self.verbs)
                and (self.resources is None or record.resource in self.resources
                     or base in self.resources))

    def clear(self) -> None:
        self.times = 0


_REASONS = {500: "InternalError", 503: "ServiceUnavailable", 429: "TooManyRequests",
            504: "Timeout", 401: "Unauthorized", 403: "Forbidden"}


class Api:
    """The API server's behaviour over a store, a type registry and a token signer."""

    def __init__(self, store: Store, registry: Registry, tokens: TokenAuthority, *,
                 address: Callable[[], str], watch_timeout: float = 1800.0,
                 bearer_token: str | None = None) -> None:
        self.store = store
        self.registry = registry
        self.address = address
        self.auth = Auth(store, tokens, bearer_token)
        self.reads = Reads(store, watch_timeout=watch_timeout)
        self.writes = Writes(Writer(store, registry))
        self.faults: list[Fault] = []
        self.records: deque[RequestRecord] = deque(maxlen=100_000)
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    # Entry point ----------------------------------------------------------------------

    def handle(self, req: Request, *, record: bool = True) -> Response | WatchPlan:
        rec = self._classify(req)
        try:
            if record:
                self.auth.check(req)
                self._check_faults(rec)
            result = self._route(req, rec)
        except ApiError as err:
            result = Response(err.code, dump(err.status()), headers=err.headers)
        if record:
            code = result.code if isinstance(result, Response) else 200
            with self._lock:
                self.records.append(RequestRecord(**{**rec.__dict__, "code": code}))
                self.counts[(rec.verb, rec.resource)] += 1
        return result

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
            return self.auth.token_review(req)
        if method == "GET" and name:
            return self.reads.get(rt, self.writes.writer.current(rt, ns, name), req)
        if method == "GET":
            if rec.verb == "watch":
                return self.reads.watch(rt, ns, req)
            return self.reads.list(rt, ns, req)
        if method == "POST" and sub == "token" and name:
            return self.auth.token_request(rt, ns, name, req)
        if method == "POST" and not name:
            return self.writes.create(rt, ns, req)
        if method == "PUT" and name:
            return self.writes.update(rt, ns, name, sub or None, req)
        if method == "PATCH" and name:
            return self.writes.patch(rt, ns, name, sub or None, req)
        if method == "DELETE" and name:
            return self.writes.delete(rt, ns, name, req)
        if method == "DELETE":
            return self.writes.delete_collection(rt, ns, req)
        raise ApiError.method_not_allowed("the server does not allow this method on the "
                                          "requested resource")

    def _non_resource(self, req: Request, parts: list[str]) -> Response:
        if req.method != "GET":
            raise ApiError.not_found_path()
        path = "/".join(parts)
        if path == "api":
            return json_response(200, self.registry.api_versions(self.address()))
        if path == "apis":
            return json_response(200, self.registry.api_group_list())
        if len(parts) == 2 and parts[0] == "apis" and (doc := self.registry.api_group(parts[1])):
            return json_response(200, doc)
        if len(parts) == 2 and parts[0] == "api" \
                and (doc := self.registry.api_resource_list("", parts[1])):
            return json_response(200, doc)
        if len(parts) == 3 and parts[0] == "apis" \
                and (doc := self.registry.api_resource_list(parts[1], parts[2])):
            return json_response(200, doc)
        if path == "version":
            return json_response(200, VERSION_INFO)
        if path in ("healthz", "livez", "readyz"):
            return Response(200, b"ok", "text/plain; charset=utf-8")
        if path == "openapi/v3":
            return json_response(200, self.registry.openapi_root())
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
