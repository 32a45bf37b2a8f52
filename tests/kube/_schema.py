"""Schemas: the built-in types' OpenAPI definitions (from the ``kubernetes-validate``
package, the Kubernetes 1.32 swagger), CRD ``openAPIV3Schema`` s, and what the server
does with them: patch metadata for strategic merge patch, list types for server-side
apply, defaulting, pruning of unknown fields, CRD validation, and the ``/openapi/v3``
documents ``kubectl`` reads (field validation support, strategic merge patch keys).

Not done: CEL rules (``x-kubernetes-validations``), formats, ratcheting.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

import jsonschema

from tests.kube._resources import ResourceType

__all__ = [
    "SchemaCursor",
    "builtin_definitions",
    "crd_errors",
    "gv_openapi",
    "schema_for",
]

K8S_SCHEMA_VERSION = "v1.32.0-local"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"


@functools.cache
def builtin_definitions() -> dict[str, dict[str, Any]]:
    """Every definition of the Kubernetes 1.32 API, by name
    (``io.k8s.api.core.v1.Service``). Loaded once per process (~30 ms)."""
    root = resources.files("kubernetes_validate") / "kubernetes-json-schema" / K8S_SCHEMA_VERSION
    return json.loads((root / "_definitions.json").read_text())["$defs"]


@functools.cache
def _definition_by_gvk() -> dict[tuple[str, str, str], str]:
    index = {}
    for name, schema in builtin_definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or ():
            index[(gvk["group"], gvk["version"], gvk["kind"])] = name
    return index


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


class SchemaCursor:
    """A position in a schema, followed key by key (``$ref`` s resolved), with the
    list and patch metadata a merge needs. A cursor on ``None`` knows nothing: every
    list is atomic and every field allowed. ``structural``: a CRD schema, where an
    object without ``properties`` keeps nothing (unless it preserves unknown fields);
    a ``$ref`` leads back into the built-in definitions, which are not."""

    __slots__ = ("schema", "structural")

    def __init__(self, schema: dict[str, Any] | None, *, structural: bool = False) -> None:
        if schema is not None and isinstance(schema.get("$ref"), str):
            structural = False
        self.structural = structural
        self.schema = self._resolve(schema)

    @staticmethod
    def _resolve(schema: dict[str, Any] | None) -> dict[str, Any] | None:
        while schema is not None and isinstance(schema.get("$ref"), str):
            schema = builtin_definitions().get(_ref_name(schema["$ref"]))
        if schema is not None and "allOf" in schema and len(schema["allOf"]) == 1:
            return SchemaCursor._resolve(schema["allOf"][0])
        return schema

    def raw_property(self, key: str) -> dict[str, Any] | None:
        if self.schema is None:
            return None
        props = self.schema.get("properties") or {}
        if key in props:
            return props[key]
        extra = self.schema.get("additionalProperties")
        return extra if isinstance(extra, dict) else None

    def field(self, key: str) -> SchemaCursor:
        return SchemaCursor(self.raw_property(key), structural=self.structural)

    def items(self) -> SchemaCursor:
        return SchemaCursor(None if self.schema is None else self.schema.get("items"),
                            structural=self.structural)

    def patch_meta(self, key: str) -> tuple[set[str], str | None]:
        """(strategies, merge key) of a field, for strategic merge patch."""
        prop = self.raw_property(key) or {}
        strategies = set(filter(None, prop.get("x-kubernetes-patch-strategy", "").split(",")))
        return strategies, prop.get("x-kubernetes-patch-merge-key")

    def list_type(self, key: str) -> tuple[str, list[str]]:
        """(``atomic`` | ``set`` | ``map``, map keys) of a list field, for apply."""
        prop = self.raw_property(key) or {}
        keys = prop.get("x-kubernetes-list-map-keys")
        if not keys and prop.get("x-kubernetes-patch-merge-key"):
            keys = [prop["x-kubernetes-patch-merge-key"]]
        kind = prop.get("x-kubernetes-list-type") or ("map" if keys else "atomic")
        return kind, list(keys or ())

    @property
    def known(self) -> bool:
        return self.schema is not None

    @property
    def open(self) -> bool:
        """Fields not in ``properties`` are kept (maps, preserve-unknown-fields, and
        in the built-in definitions any object schema without properties)."""
        s = self.schema
        if s is None or "additionalProperties" in s or s.get("x-kubernetes-int-or-string"):
            return True
        if s.get("x-kubernetes-preserve-unknown-fields"):
            return True
        if "properties" in s:
            return False
        return not self.structural or s.get("type") != "object"


def schema_for(rt: ResourceType) -> SchemaCursor:
    """The root schema of an object of this type (``metadata`` is ObjectMeta)."""
    if rt.schema is not None:
        root = copy.copy(rt.schema)
        root["properties"] = {**(root.get("properties") or {}),
                              "metadata": {"$ref": f"#/$defs/{OBJECT_META}"}}
        return SchemaCursor(root, structural=True)
    name = _definition_by_gvk().get((rt.group, rt.version, rt.kind))
    return SchemaCursor(builtin_definitions()[name] if name else None)


# Pruning and defaulting (structural schemas) ------------------------------------


def prune(obj: Any, cursor: SchemaCursor, path: str = "") -> list[str]:
    """Drop fields the schema does not know, in place; return their paths
    (``.spec.foo``), which ``fieldValidation=Strict`` turns into an error."""
    if not cursor.known:
        return []
    dropped: list[str] = []
    if isinstance(obj, dict):
        props = (cursor.schema or {}).get("properties") or {}
        for key in list(obj):
            if key in props or (not path and key in ("apiVersion", "kind")) or cursor.open:
                dropped += prune(obj[key], cursor.field(key), f"{path}.{key}")
            else:
                del obj[key]
                dropped.append(f"{path}.{key}")
    elif isinstance(obj, list):
        items = cursor.items()
        for i, item in enumerate(obj):
            dropped += prune(item, items, f"{path}[{i}]")
    return dropped


def apply_defaults(obj: Any, schema: dict[str, Any] | None) -> None:
    """Set the ``default`` of every absent property, in place (CRD schemas)."""
    if not schema:
        return
    if isinstance(obj, dict):
        for key, prop in (schema.get("properties") or {}).items():
            if key not in obj and "default" in prop:
                obj[key] = copy.deepcopy(prop["default"])
            if key in obj:
                apply_defaults(obj[key], prop)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in obj:
                if key not in (schema.get("properties") or {}):
                    apply_defaults(obj[key], extra)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(item, schema["items"])


# CRD validation --------------------------------------------------------------------


def _jsonschema_of(schema: Any) -> Any:
    """A CRD schema as draft-4 JSON schema (``nullable`` → a null type;
    int-or-string → either; Kubernetes extensions dropped)."""
    if isinstance(schema, list):
        return [_jsonschema_of(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _jsonschema_of(v) for k, v in schema.items()
           if not k.startswith("x-kubernetes-") and k not in ("format", "nullable",
                                                             "default", "example")}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out:
        out["properties"] = {k: _jsonschema_of(v) for k, v in schema["properties"].items()}
    return out


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(_jsonschema_of(json.loads(schema_json)))


def _dotted(path: Iterator[Any] | Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def crd_errors(obj: dict[str, Any], schema: dict[str, Any]) -> list[tuple[str, str, str]]:
    """What the real server says of a custom object its CRD schema refuses, as
    (reason, field, message) causes of a 422 Invalid."""
    body = {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind")}
    validator = _validator(json.dumps(schema, sort_keys=True))
    causes = []
    for err in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        field = _dotted(err.absolute_path)
        if err.validator == "required":
            missing = err.message.split("'")[1] if "'" in err.message else err.message
            causes.append(("FieldValueRequired", f"{field}.{missing}".lstrip("."),
                           "Required value"))
        elif err.validator == "enum":
            allowed = ", ".join(json.dumps(v) for v in err.validator_value)
            causes.append(("FieldValueNotSupported", field,
                           f"Unsupported value: {json.dumps(err.instance)}: "
                           f"supported values: {allowed}"))
        elif err.validator == "type":
            causes.append(("FieldValueTypeInvalid", field,
                           f"Invalid value: {json.dumps(err.instance)}: {field} in body "
                           f"must be of type {err.validator_value}: "
                           f"{json.dumps(err.instance)}"))
        else:
            causes.append(("FieldValueInvalid", field,
                           f"Invalid value: {json.dumps(err.instance)}: {err.message}"))
    return causes


# /openapi/v3 --------------------------------------------------------------------


def _to_oas3(schema: Any) -> Any:
    """A definition as the real /openapi/v3 spells it: refs into components, one type."""
    if isinstance(schema, list):
        return [_to_oas3(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "$ref" and isinstance(value, str):
            out["$ref"] = f"#/components/schemas/{_ref_name(value)}"
        elif key == "type" and isinstance(value, list):
            out["type"] = next((t for t in value if t != "null"), "object")
        elif key == "properties":
            out[key] = {k: _to_oas3(v) for k, v in value.items()}
        else:
            out[key] = _to_oas3(value)
    return out


def _closure(names: list[str]) -> dict[str, Any]:
    defs = builtin_definitions()
    seen: dict[str, Any] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen[name] = defs[name]
        todo.extend(_ref_name(r) for r in _refs(defs[name]))
    return seen


def _refs(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _refs(value)


_PATCH_TYPES_CUSTOM = ("application/json-patch+json", "application/merge-patch+json",
                       "application/apply-patch+yaml")
_QUERY_PARAMS = ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")


def _custom_component(rt: ResourceType) -> tuple[str, dict[str, Any]]:
    rev = ".".join(reversed(rt.group.split(".")))
    schema = copy.deepcopy(rt.schema) if rt.schema else {
        "type": "object", "x-kubernetes-preserve-unknown-fields": True}
    schema = _to_oas3(schema)
    schema.setdefault("properties", {})["metadata"] = {
        "$ref": f"#/components/schemas/{OBJECT_META}"}
    schema["x-kubernetes-group-version-kind"] = [
        {"group": rt.group, "version": rt.version, "kind": rt.kind}]
    return f"{rev}.{rt.version}.{rt.kind}", schema


def gv_openapi(types: list[ResourceType]) -> dict[str, Any]:
    """The ``/openapi/v3/apis/<group>/<version>`` document for these resource types:
    an item path per resource with get/put/patch/delete (patch declaring its media
    types and ``fieldValidation``), and the component schemas."""
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for rt in types:
        if rt.custom and rt.group != "apiextensions.k8s.io":
            name, schema = _custom_component(rt)
            components[name] = schema
            components.update({k: _to_oas3(v) for k, v in _closure([OBJECT_META]).items()})
            patch_types = _PATCH_TYPES_CUSTOM
        else:
            name = _definition_by_gvk().get((rt.group, rt.version, rt.kind), "")
            components.update({k: _to_oas3(v) for k, v in _closure([name]).items()})
            patch_types = (*_PATCH_TYPES_CUSTOM, "application/strategic-merge-patch+json")
        if INT_OR_STRING in components:
            components[INT_OR_STRING] = {"type": "string", "format": "int-or-string"}
        prefix = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
        scope = "/namespaces/{namespace}" if rt.namespaced else ""
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        ref = {"schema": {"$ref": f"#/components/schemas/{name}"}}
        params = [{"name": p, "in": "query", "schema": {"type": "string"}}
                  for p in _QUERY_PARAMS]
        ok = {"200": {"description": "OK", "content": {"application/json": ref}}}
        op = {"x-kubernetes-group-version-kind": gvk, "responses": ok}
        if rt.stored:
            paths[f"{prefix}{scope}/{rt.plural}/{{name}}"] = {
                "get": {**op, "x-kubernetes-action": "get"},
                "put": {**op, "x-kubernetes-action": "put", "parameters": params,
                        "requestBody": {"content": {"application/json": ref}}},
                "patch": {**op, "x-kubernetes-action": "patch", "parameters": params,
                          "requestBody": {"content": {t: {"schema": {"type": "object"}}
                                                      for t in patch_types}}},
                "delete": {**op, "x-kubernetes-action": "delete"},
            }
        paths[f"{prefix}{scope}/{rt.plural}"] = {
            "post": {**op, "x-kubernetes-action": "post", "parameters": params,
                     "requestBody": {"content": {"application/json": ref}}}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": paths, "components": {"schemas": components}}
