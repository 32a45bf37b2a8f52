"""``FakeApiServer``: a protocol-faithful stand-in for kube-apiserver on loopback.

The real ``kubernetes`` Python client and the real ``kubectl`` talk to it over
HTTP/1.1 exactly as to a cluster (see ``tests/kube/README.md`` for what is served
and what is not); tests steer it from Python::

    with FakeApiServer() as kube:
        kube.write_kubeconfig(tmp_path / "kubeconfig")
        kube.load(ROOT / "deploy" / "crds")             # CRDs, as kubectl apply would
        kube.create({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": "meshlib-system"}})
        token = kube.token("default", "reviews")         # a projected SA token
        kube.compact()                                   # next watch from an old RV: 410
        kube.drop_watches()                              # as an apiserver restart would
        with kube.fault(503, verbs={"list"}):            # failing lists, for a while
            ...
        assert kube.count("list", "services") == 2       # a client re-listed
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import yaml

from tests.kube._api import Api, Fault, RequestRecord
from tests.kube._discovery import Registry
from tests.kube._http import HttpServer
from tests.kube._messages import Request, Response
from tests.kube._resources import ResourceType
from tests.kube._store import Store
from tests.kube._tokens import TokenAuthority

__all__ = ["FakeApiError", "FakeApiServer"]

Obj = dict[str, Any]
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class FakeApiError(Exception):
    """A Python-side call on the fake was refused; ``status`` is the Status object."""

    def __init__(self, status: Obj) -> None:
        super().__init__(f"{status.get('code')} {status.get('reason')}: {status.get('message')}")
        self.status = status
        self.code = status.get("code")
        self.reason = status.get("reason")


class FakeApiServer:
    """A fake kube-apiserver on ``127.0.0.1:<port>``; start/stop, or use ``with``.

    Args:
        port: 0 picks a free port.
        history: change events kept for watches and paginated lists; a watch (or a
            ``continue``) from a revision older than that gets 410 Expired.
        bookmark_interval: seconds between BOOKMARK events on watches that allow them
            (a minute, as the real server; :meth:`send_bookmarks` sends one now). Every
            such watch also gets one as its ``timeoutSeconds`` runs out.
        watch_timeout: a watch without ``timeoutSeconds`` ends after this long.
        bearer_token: if set, requests must carry it (or a service-account token this
            fake minted for the API audience) as ``Authorization: Bearer``; else 401.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, history: int = 10_000,
                 bookmark_interval: float = 60.0, watch_timeout: float = 1800.0,
                 bearer_token: str | None = None) -> None:
        self.store = Store(history=history)
        self.registry = Registry()
        self.tokens = TokenAuthority()
        self.bearer_token = bearer_token
        self._api = Api(self.store, self.registry, self.tokens, address=lambda: self.address,
                        watch_timeout=watch_timeout, bearer_token=bearer_token)
        self._bookmark_interval = bookmark_interval
        self._http: HttpServer | None = HttpServer((host, port), self._api,
                                                   bookmark_interval=bookmark_interval)
        self.host, self.port = self._http.server_address[:2]
        self._thread: threading.Thread | None = None
        for ns in DEFAULT_NAMESPACES:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # Lifecycle ----------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> FakeApiServer:
        """Serve (again, after :meth:`stop`: same port, same objects and history, as
        an apiserver restarting over the same etcd)."""
        if self._http is None:
            self._http = HttpServer((self.host, self.port), self._api,
                                    bookmark_interval=self._bookmark_interval)
        if self._thread is None:
            self._thread = threading.Thread(target=self._http.serve_forever,
                                            kwargs={"poll_interval": 0.05},
                                            name=f"fake-apiserver:{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: end every watch abruptly, close every connection."""
        if self._thread is None:
            return
        self.store.close_watches("stopped")
        assert self._http is not None
        self._http.shutdown()
        self._http.cut_connections()
        self._http.server_close()
        self._thread.join(timeout=5)
        self._thread = None
        self._http = None

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # Clients ------------------------------------------------------------------------

    def kubeconfig(self, *, namespace: str = "default", token: str | None = None) -> Obj:
        """A kubeconfig (dict) for this server; ``token`` defaults to ``bearer_token``."""
        user: Obj = {}
        if token or self.bearer_token:
            user["token"] = token or self.bearer_token
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                      "namespace": namespace}}],
        }

    def write_kubeconfig(self, path: str | Path, **kw: Any) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.kubeconfig(**kw)))
        return path

    def api_client(self, *, token: str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` for this server (no global config)."""
        from kubernetes import client  # imported late: only tests that use it pay

        config = client.Configuration(host=self.url)
        if token or self.bearer_token:
            config.api_key = {"BearerToken": token or self.bearer_token or ""}
            config.api_key_prefix = {"BearerToken": "Bearer"}
        return client.ApiClient(config)

    # Objects, from Python (no HTTP; the same rules and watch events) ----------------

    def _type_of(self, api_version: str, kind: str) -> ResourceType:
        rt = self.registry.by_kind(api_version, kind)
        if rt is None:
            raise FakeApiError({"code": 404, "reason": "NotFound",
                                "message": f'no matches for kind "{kind}" in version '
                                           f'"{api_version}"'})
        return rt

    def _path(self, rt: ResourceType, namespace: str | None, name: str | None = None) -> str:
        prefix = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
        if rt.namespaced:
            prefix += f"/namespaces/{quote(namespace or 'default')}"
        prefix += f"/{rt.plural}"
        return f"{prefix}/{quote(name)}" if name else prefix

    def _call(self, method: str, path: str, body: Any = None, *,
              content_type: str = "application/json", query: dict[str, str] | None = None,
              ok: tuple[int, ...] = (200, 201)) -> Obj:
        raw = b"" if body is None else json.dumps(body).encode()
        result = self._api.handle(Request(method, path, query or {},
                                          {"content-type": content_type}, raw), record=False)
        assert isinstance(result, Response)
        out = json.loads(result.body)
        if result.code not in ok:
            raise FakeApiError(out)
        return out

    def create(self, obj: Obj) -> Obj:
        """Create an object (namespace from its metadata, default "default")."""
        rt = self._type_of(obj["apiVersion"], obj["kind"])
        ns = (obj.get("metadata") or {}).get("namespace") or "default"
        return self._call("POST", self._path(rt, ns), _clean(obj))

    def apply(self, obj: Obj) -> Obj:
        """Create, or replace the live object with ``obj`` (status included where the
        type has a status subresource): a seeding helper, not a three-way merge."""
        rt = self._type_of(obj["apiVersion"], obj["kind"])
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        live = self.get(obj["apiVersion"], obj["kind"], meta["name"], ns)
        if live is None:
            created = self.create(obj)
            if rt.status and "status" in obj:
                return self.update_status({**created, "status": obj["status"]})
            return created
        body = _clean(obj)
        body["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        stored = self._call("PUT", self._path(rt, ns, meta["name"]), body)
        if rt.status and "status" in obj and obj["status"] != stored.get("status"):
            return self.update_status({**stored, "status": obj["status"]})
        return stored

    def update_status(self, obj: Obj) -> Obj:
        """PUT ``obj``'s status to the status subresource (resourceVersion unchecked)."""
        rt = self._type_of(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        return self._call("PATCH", self._path(rt, meta.get("namespace"), meta["name"])
                          + "/status", {"status": obj.get("status")},
                          content_type="application/merge-patch+json")

    def get(self, api_version: str, kind: str, name: str,
            namespace: str | None = "default") -> Obj | None:
        rt = self._type_of(api_version, kind)
        try:
            return self._call("GET", self._path(rt, namespace, name))
        except FakeApiError as err:
            if err.code == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str | None = None) -> list[Obj]:
        """Objects of a kind (all namespaces unless ``namespace``), each with its
        ``apiVersion`` and ``kind`` (which items of a typed list on the wire lack)."""
        rt = self._type_of(api_version, kind)
        path = self._path(rt, namespace)
        if rt.namespaced and namespace is None:
            path = path.replace("/namespaces/default/", "/")
        return [{"apiVersion": rt.api_version, "kind": rt.kind, **item}
                for item in self._call("GET", path)["items"]]

    def delete(self, api_version: str, kind: str, name: str,
               namespace: str | None = "default") -> bool:
        """Delete; False if it was not there."""
        rt = self._type_of(api_version, kind)
        try:
            self._call("DELETE", self._path(rt, namespace, name))
        except FakeApiError as err:
            if err.code == 404:
                return False
            raise
        return True

    def load(self, *sources: str | Path) -> list[Obj]:
        """``apply`` every object of YAML files, directories of them (``*.yaml``,
        ``*.yml``, ``*.json``), or YAML text; CRDs and Namespaces first."""
        docs = [d for d in _yaml_docs(sources) if d]
        order = {"CustomResourceDefinition": 0, "Namespace": 1}
        docs.sort(key=lambda d: order.get(d.get("kind", ""), 2))
        return [self.apply(d) for d in docs]

    @property
    def resource_version(self) -> int:
        """The current revision (the newest object's resourceVersion)."""
        return self.store.rv

    # Test hooks ---------------------------------------------------------------------

    def compact(self) -> None:
        """Forget the event history (etcd compaction): a watch from any earlier
        resourceVersion gets an ERROR event 410 Expired, a ``continue`` token HTTP 410."""
        self.store.compact()

    def drop_watches(self, *, abrupt: bool = False) -> int:
        """End every open watch: cleanly (the stream's last chunk, as when the server
        times a watch out) or ``abrupt`` (the connection cut mid-stream, as a crashed
        apiserver or a load balancer does). Returns how many were open."""
        return self.store.close_watches("abrupt" if abrupt else "dropped")

    def send_bookmarks(self) -> None:
        """A BOOKMARK now on every watch that allows them."""
        with self.store.lock:
            for w in list(self.store.watchers):
                if w.bookmarks:
                    self.store.bookmark(w)

    def open_watches(self, resource: str | None = None) -> int:
        """Open watches (on ``resource``, e.g. "services", "grpcroutes")."""
        with self.store.lock:
            return sum(1 for w in self.store.watchers
                       if resource is None or w.group_resource.split(".")[0] == resource)

    def wait_for_watches(self, resource: str | None = None, count: int = 1,
                         timeout: float = 5.0) -> None:
        """Block until ``count`` watches are open (a client has synced and watches)."""
        deadline = time.monotonic() + timeout
        while self.open_watches(resource) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.open_watches(resource)} watches on "
                                   f"{resource or 'anything'} after {timeout}s, wanted {count}")
            time.sleep(0.01)

    def fault(self, code: int = 503, *, verbs: Iterable[str] | None = None,
              resources: Iterable[str] | None = None, times: int | None = None,
              retry_after: int | None = None) -> Fault:
        """Answer matching API requests with ``code`` (a Status), ``times`` times or
        until ``.clear()`` / the end of a ``with`` block. ``verbs``: get, list, watch,
        create, update, patch, delete; ``resources``: "services", "leases",
        "grpcroutes/status"... (default: all)."""
        fault = _FaultHandle(code=code, verbs=frozenset(verbs) if verbs else None,
                             resources=frozenset(resources) if resources else None,
                             times=times, retry_after=retry_after)
        with self._api._lock:
            self._api.faults.append(fault)
        return fault

    def pause(self, code: int = 503) -> Fault:
        """Every API request fails with ``code`` and open watches are cut, until
        :meth:`resume` (an apiserver that is down but still accepts connections)."""
        fault = self.fault(code)
        self.drop_watches(abrupt=True)
        return fault

    def resume(self) -> None:
        with self._api._lock:
            for fault in self._api.faults:
                fault.clear()
            self._api.faults.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """Every API request so far (verb, resource, namespace, name, query, code)."""
        with self._api._lock:
            return list(self._api.records)

    def count(self, verb: str | None = None, resource: str | None = None) -> int:
        """Requests with this verb on this resource (``None``: any). ``resource`` is
        the plural, with "/status" for the subresource: ``count("list", "services")``,
        ``count("update", "grpcroutes/status")``."""
        with self._api._lock:
            return sum(n for (v, r), n in self._api.counts.items()
                       if (verb is None or v == verb) and (resource is None or r == resource))

    def reset_counts(self) -> None:
        with self._api._lock:
            self._api.records.clear()
            self._api.counts.clear()

    def token(self, namespace: str, service_account: str, *, audience: str | list[str] =
              "meshlib", expires_in: float = 600, pod: str | None = None) -> str:
        """A service-account token as a projected volume holds it (audience ``meshlib``
        by default). The ServiceAccount (and its namespace) is created if missing, as a
        token names a live account; ``pod``: bound to that (existing) Pod."""
        sa = self._ensure_service_account(namespace, service_account)
        bound = None
        if pod is not None:
            live = self.get("v1", "Pod", pod, namespace)
            if live is None:
                raise FakeApiError({"code": 404, "reason": "NotFound",
                                    "message": f'pods "{pod}" not found'})
            bound = (pod, live["metadata"]["uid"])
        audiences = [audience] if isinstance(audience, str) else list(audience)
        token, _ = self.tokens.mint(namespace=namespace, service_account=service_account,
                                    service_account_uid=sa["metadata"]["uid"],
                                    audiences=audiences, expires_in=expires_in, pod=bound)
        return token

    def expired_token(self, namespace: str, service_account: str, *,
                      audience: str = "meshlib") -> str:
        """A token of that account that expired a minute ago."""
        return self.token(namespace, service_account, audience=audience, expires_in=-60)

    def forged_token(self, namespace: str, service_account: str, *,
                     audience: str = "meshlib") -> str:
        """A well-formed token this server did not sign (TokenReview refuses it)."""
        other = TokenAuthority(self.tokens.issuer)
        token, _ = other.mint(namespace=namespace, service_account=service_account,
                              service_account_uid=str(uuid.uuid4()), audiences=[audience],
                              expires_in=600)
        return token

    def review(self, token: str, audiences: list[str] | None = None) -> Obj:
        """What a TokenReview of ``token`` would answer (its ``status``)."""
        return self._api.auth.review(token, list(audiences or ()))

    def _ensure_service_account(self, namespace: str, name: str) -> Obj:
        if self.get("v1", "Namespace", namespace, None) is None:
            self.create({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": namespace}})
        sa = self.get("v1", "ServiceAccount", name, namespace)
        if sa is None:
            sa = self.create({"apiVersion": "v1", "kind": "ServiceAccount",
                              "metadata": {"name": name, "namespace": namespace}})
        return sa


class _FaultHandle(Fault):
    """A :class:`Fault` that clears itself at the end of a ``with`` block."""

    def __enter__(self) -> _FaultHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()


def _clean(obj: Obj) -> Obj:
    """A copy without what the server sets (so a fetched object can be re-sent)."""
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        meta.pop(key, None)
    return out


def _yaml_docs(sources: Iterable[str | Path]) -> Iterator[Obj]:
    for source in sources:
        if isinstance(source, Path) or "\n" not in str(source):
            path = Path(source)
            # A directory's kustomization file is kustomize's, not an object.
            files = sorted(p for ext in ("*.yaml", "*.yml", "*.json") for p in path.glob(ext)
                           if p.stem != "kustomization") if path.is_dir() else [path]
            for file in files:
                for doc in yaml.safe_load_all(file.read_text()):
                    yield from _flatten(doc)
        else:
            for doc in yaml.safe_load_all(str(source)):
                yield from _flatten(doc)


def _flatten(doc: Any) -> Iterator[Obj]:
    if isinstance(doc, dict) and doc.get("kind", "").endswith("List") and "items" in doc:
        for item in doc["items"]:
            yield from _flatten(item)
    elif isinstance(doc, dict):
        yield doc

