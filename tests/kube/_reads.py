"""The read verbs: get, list (selectors, chunks over a consistent snapshot,
resourceVersion semantics) and watch, as
https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions says."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

from tests.kube._errors import ApiError
from tests.kube._messages import (
    Request,
    Response,
    WatchPlan,
    dump,
    int_param,
    json_response,
    served_as,
)
from tests.kube._resources import ResourceType
from tests.kube._selectors import field_selector, label_selector
from tests.kube._store import Store
from tests.kube._table import table, wants_table

__all__ = ["Reads"]

Obj = dict[str, Any]


def _encode_continue(rv: int, key: tuple[str, str]) -> str:
    token = {"v": "meta.k8s.io/v1", "rv": rv, "start": f"{key[0]}/{key[1]}\x00"}
    return base64.b64encode(dump(token)).decode()


def _decode_continue(text: str) -> tuple[int, tuple[str, str]]:
    try:
        token = json.loads(base64.b64decode(text))
        ns, _, name = token["start"].rstrip("\x00").partition("/")
        return int(token["rv"]), (ns, name)
    except (ValueError, KeyError, TypeError):
        raise ApiError.bad_request("continue key is not valid: incorrect encoded start "
                                   "resourceVersion (version meta.k8s.io/v1)") from None


class Reads:
    """get / list / watch over a :class:`Store`."""

    def __init__(self, store: Store, *, watch_timeout: float) -> None:
        self.store = store
        self.watch_timeout = watch_timeout

    def get(self, rt: ResourceType, obj: Obj, req: Request) -> Response:
        obj = served_as(rt, obj)
        if wants_table(req.headers.get("accept", "")):
            return json_response(200, table(rt, [obj], {
                "resourceVersion": obj["metadata"]["resourceVersion"]}))
        return json_response(200, obj)

    @staticmethod
    def _selector(rt: ResourceType, req: Request) -> Callable[[Obj], bool]:
        labels = label_selector(req.query.get("labelSelector"))
        fields = field_selector(req.query.get("fieldSelector"), rt.kind)
        return lambda obj: labels(obj) and fields(obj)

    def list(self, rt: ResourceType, ns: str | None, req: Request) -> Response:
        q = req.query
        selects = self._selector(rt, req)
        rv, match = q.get("resourceVersion", ""), q.get("resourceVersionMatch", "")
        limit = int_param(q, "limit")
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
                at = int_param(q, "resourceVersion")
            else:
                at = self.store.rv
                if rv not in ("", "0") and int_param(q, "resourceVersion") > self.store.rv:
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
            return json_response(200, table(rt, items, meta))
        if rt.custom:
            out = [served_as(rt, o) for o in items]
        else:  # typed lists carry no kind/apiVersion per item
            out = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
                   for o in items]
        return json_response(200, {"kind": rt.list_kind, "apiVersion": rt.api_version,
                                "metadata": meta, "items": out})

    def watch(self, rt: ResourceType, ns: str | None, req: Request) -> WatchPlan:
        q = req.query
        timeout = int_param(q, "timeoutSeconds") or self.watch_timeout
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
