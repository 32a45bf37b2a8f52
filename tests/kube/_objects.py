"""The write paths of the REST storage: create, update (PUT and every PATCH flavour
end here), delete, as k8s.io/apiserver's generic registry runs them: metadata the
server owns, the status subresource's split, ``generation``, optimistic concurrency,
no-op writes that keep their resourceVersion, finalizers, schema pruning/defaulting/
validation, and ``dryRun``.
"""

from __future__ import annotations

import copy
import json
import random
import time
import uuid
from typing import Any

from tests.kube._discovery import Registry
from tests.kube._errors import ApiError
from tests.kube._kinds import gateway_defaults_schema, prepare_create, prepare_update, validate
from tests.kube._resources import GATEWAY_GROUP, ResourceType
from tests.kube._schema import apply_defaults, crd_errors, prune, schema_for
from tests.kube._store import Store

__all__ = ["Writer", "now_rfc3339"]

Obj = dict[str, Any]
CRDS = "customresourcedefinitions.apiextensions.k8s.io"
_SERVER_META = ("uid", "creationTimestamp", "generation", "deletionTimestamp",
                "deletionGracePeriodSeconds", "name", "namespace")


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _tracks_generation(rt: ResourceType) -> bool:
    return rt.custom or rt.group_resource == CRDS


def _spec_of(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _same(a: Obj, b: Obj) -> bool:
    def strip(o: Obj) -> Obj:
        meta = {k: v for k, v in o.get("metadata", {}).items() if k != "resourceVersion"}
        return {**o, "metadata": meta}
    return strip(a) == strip(b)


class Writer:
    """Create / update / delete with the server's rules, on a :class:`Store`."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    # Helpers ------------------------------------------------------------------------

    @staticmethod
    def key(rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str]:
        return (namespace or "" if rt.namespaced else "", name)

    def current(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.store.get(rt.group_resource, self.key(rt, namespace, name))
        if obj is None:
            raise ApiError.not_found(rt.group_resource, name)
        return obj

    def _schema_pass(self, rt: ResourceType, obj: Obj, query: dict[str, str],
                     warnings: list[str]) -> None:
        """Prune unknown fields (``fieldValidation``: Strict refuses them, Warn, the
        default, warns, Ignore drops them quietly), apply defaults, validate."""
        dropped = prune(obj, schema_for(rt))
        directive = query.get("fieldValidation", "Warn")
        if dropped and directive == "Strict":
            if rt.custom:
                raise ApiError.bad_request(", ".join(f"{p}: field not declared in schema"
                                                     for p in dropped))
            unknown = ", ".join(f'unknown field "{p.lstrip(".")}"' for p in dropped)
            raise ApiError.bad_request(f'{rt.kind} in version "{rt.version}" cannot be '
                                       f'handled as a {rt.kind}: strict decoding error: '
                                       f'{unknown}')
        if dropped and directive == "Warn":
            warnings += [f'unknown field "{p.lstrip(".")}"' for p in dropped]
        if rt.group == GATEWAY_GROUP:
            apply_defaults(obj, gateway_defaults_schema(rt.kind))
        elif rt.schema:
            apply_defaults(obj, rt.schema)
        causes = validate(rt, obj)
        if rt.schema:
            causes += crd_errors(obj, rt.schema)
        if causes:
            raise ApiError.invalid(rt.kind, rt.group, obj["metadata"].get("name", ""), causes)

    def _after_commit(self, rt: ResourceType, stored: Obj | None, old: Obj | None) -> None:
        if rt.group_resource == CRDS:
            self.registry.set_crd(stored, old)
            if stored is None and old is not None:
                spec = old.get("spec") or {}
                gr = f"{(spec.get('names') or {}).get('plural')}.{spec.get('group')}"
                self.store.drop_group_resource(gr)

    # Create -------------------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str | None, obj: Obj,
               query: dict[str, str], warnings: list[str],
               managed_fields: list[Obj] | None = None) -> Obj:
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError.bad_request("metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise ApiError.bad_request("the namespace of the provided object does not "
                                           "match the namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
            meta["name"] = f"{meta['generateName']}{suffix}"
        if not meta.get("name"):
            raise ApiError.invalid(rt.kind, rt.group, "", [(
                "FieldValueRequired", "metadata.name",
                "Required value: name or generateName is required")])
        if meta.get("resourceVersion"):
            raise ApiError(500, "InternalError", "Internal error occurred: resourceVersion "
                           "should not be set on objects to be created")
        if rt.namespaced and self.store.get("namespaces", ("", namespace or "")) is None:
            raise ApiError.not_found("namespaces", namespace or "")
        for key in ("uid", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if _tracks_generation(rt):
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if managed_fields:
            meta["managedFields"] = managed_fields
        prepare_create(rt, obj)
        self._schema_pass(rt, obj, query, warnings)
        key = self.key(rt, namespace, meta["name"])
        with self.store.lock:
            if self.store.get(rt.group_resource, key) is not None:
                raise ApiError.already_exists(rt.group_resource, meta["name"])
            if query.get("dryRun") == "All":
                return obj
            stored = self.store.commit(rt.group_resource, key, obj)
            self._after_commit(rt, stored, None)
        assert stored is not None
        return stored

    # Update -------------------------------------------------------------------------

    def update(self, rt: ResourceType, current: Obj, new: Obj, subresource: str | None,
               query: dict[str, str], warnings: list[str],
               managed_fields: list[Obj] | None = None) -> Obj:
        """Write ``new`` over ``current`` (resourceVersion already checked)."""
        cur_meta = current["metadata"]
        if subresource == "status":
            obj = copy.deepcopy(current)
            if "status" in new:
                obj["status"] = new["status"]
            else:
                obj.pop("status", None)
        else:
            obj = new
            if not isinstance(obj.get("metadata"), dict):
                obj["metadata"] = {}
            if rt.status:
                if "status" in current:
                    obj["status"] = copy.deepcopy(current["status"])
                else:
                    obj.pop("status", None)
        meta = obj["metadata"]
        for key in _SERVER_META:
            if key in cur_meta:
                meta[key] = cur_meta[key]
            else:
                meta.pop(key, None)
        meta["managedFields"] = managed_fields if managed_fields is not None \
            else cur_meta.get("managedFields")
        if meta["managedFields"] is None:
            del meta["managedFields"]
        obj["apiVersion"], obj["kind"] = current["apiVersion"], current["kind"]
        prepare_update(rt, obj, current)
        self._schema_pass(rt, obj, query, warnings)
        if _tracks_generation(rt) and _spec_of(obj) != _spec_of(current):
            meta["generation"] = cur_meta.get("generation", 1) + 1
        key = self.key(rt, meta.get("namespace"), meta["name"])
        with self.store.lock:
            if self.store.get(rt.group_resource, key) is not current:
                raise ApiError.modified(rt.group_resource, meta["name"])
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                if query.get("dryRun") == "All":
                    return obj
                stored = self.store.commit(rt.group_resource, key, None)
                self._after_commit(rt, None, current)
                assert stored is not None
                return stored
            if _same(current, obj):
                return current
            if query.get("dryRun") == "All":
                return obj
            stored = self.store.commit(rt.group_resource, key, obj)
            self._after_commit(rt, stored, current)
        assert stored is not None
        return stored

    # Delete -------------------------------------------------------------------------

    def delete(self, rt: ResourceType, current: Obj, options: Obj,
               query: dict[str, str]) -> Obj:
        """Delete (or, with finalizers, mark for deletion); returns the last state."""
        meta = current["metadata"]
        pre = options.get("preconditions") or {}
        for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            if pre.get(field) and pre[field] != meta.get(field):
                raise ApiError.conflict(
                    rt.group_resource, meta["name"],
                    f"Precondition failed: {label} in precondition: {pre[field]}, "
                    f"{label} in object meta: {meta.get(field)}")
        dry = query.get("dryRun") == "All" or options.get("dryRun") == ["All"]
        key = self.key(rt, meta.get("namespace"), meta["name"])
        with self.store.lock:
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp") or dry:
                    return current
                marked = copy.deepcopy(current)
                marked["metadata"]["deletionTimestamp"] = now_rfc3339()
                marked["metadata"]["deletionGracePeriodSeconds"] = 0
                if _tracks_generation(rt):
                    marked["metadata"]["generation"] = meta.get("generation", 1) + 1
                stored = self.store.commit(rt.group_resource, key, marked)
                assert stored is not None
                return stored
            if dry:
                return current
            if rt.group_resource == "namespaces":
                self._empty_namespace(meta["name"])
            stored = self.store.commit(rt.group_resource, key, None)
            self._after_commit(rt, None, current)
        assert stored is not None
        return stored

    def _empty_namespace(self, namespace: str) -> None:
        """What the namespace controller does before a namespace goes."""
        for gr in self.store.group_resources():
            if gr == "namespaces":
                continue
            for obj in self.store.items(gr, namespace):
                self.store.commit(gr, (namespace, obj["metadata"]["name"]), None)


def decode_json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError.bad_request(f"couldn't get version/kind; json parse error: {exc}") \
            from None
