"""The write verbs as the HTTP API takes them: create, update (PUT), the four PATCH
flavours, server-side apply, delete, deletecollection. Bodies are decoded and patches
computed here; the storage rules are :class:`Writer` s."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import yaml

from tests.kube._errors import ApiError
from tests.kube._messages import Request, Response, json_response, read_body, served_as
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
from tests.kube._resources import ResourceType
from tests.kube._schema import schema_for
from tests.kube._selectors import field_selector, label_selector

__all__ = ["Writes"]

Obj = dict[str, Any]


def _status_success(rt: ResourceType, obj: Obj) -> Obj:
    details: Obj = {"name": obj["metadata"]["name"], "kind": rt.plural,
                    "uid": obj["metadata"].get("uid")}
    if rt.group:
        details["group"] = rt.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": details}


class Writes:
    """create / update / patch / apply / delete through a :class:`Writer`."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.store = writer.store

    def _decode(self, rt: ResourceType, req: Request, *, as_yaml: bool = False) -> Obj:
        body = req.body
        if as_yaml:
            try:
                obj = yaml.safe_load(body)
            except yaml.YAMLError as exc:
                raise ApiError.bad_request(f"error decoding YAML: {exc}") from None
        else:
            obj = read_body(req)
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

    def create(self, rt: ResourceType, ns: str | None, req: Request) -> Response:
        warnings: list[str] = []
        obj = self._decode(rt, req)
        stored = self.writer.create(rt, ns, obj, req.query, warnings)
        return json_response(201, served_as(rt, stored), warnings)

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

    def update(self, rt: ResourceType, ns: str | None, name: str, sub: str | None,
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
        return json_response(200, served_as(rt, stored), warnings)

    def patch(self, rt: ResourceType, ns: str | None, name: str, sub: str | None,
               req: Request) -> Response:
        ctype = req.headers.get("content-type", "").split(";")[0].strip()
        if ctype == "application/apply-patch+yaml":
            return self.apply(rt, ns, name, sub, req)
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
        return json_response(200, served_as(rt, stored), warnings)

    def apply(self, rt: ResourceType, ns: str | None, name: str, sub: str | None,
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
            return json_response(201, served_as(rt, stored), warnings)
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
        return json_response(200, served_as(rt, stored), warnings)

    def delete(self, rt: ResourceType, ns: str | None, name: str, req: Request) -> Response:
        current = self.writer.current(rt, ns, name)
        options = read_body(req) if req.body.strip() else {}
        stored = self.writer.delete(rt, current, options or {}, req.query)
        if rt.custom or rt.plural in ("services", "pods", "serviceaccounts") \
                or stored["metadata"].get("deletionTimestamp"):
            return json_response(200, served_as(rt, stored))
        return json_response(200, _status_success(rt, stored))

    def delete_collection(self, rt: ResourceType, ns: str | None, req: Request) -> Response:
        labels = label_selector(req.query.get("labelSelector"))
        fields = field_selector(req.query.get("fieldSelector"), rt.kind)
        for obj in self.store.items(rt.group_resource, ns):
            if labels(obj) and fields(obj):
                with contextlib.suppress(ApiError):
                    self.writer.delete(rt, obj, {}, req.query)
        return json_response(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Success"})
