"""The four PATCH flavours the API server accepts, on plain JSON values.

- JSON merge patch (RFC 7386), ``application/merge-patch+json``;
- JSON patch (RFC 6902), ``application/json-patch+json``;
- strategic merge patch, ``application/strategic-merge-patch+json``: lists merged by
  the ``x-kubernetes-patch-merge-key`` of the built-in schemas, and the directives
  kubectl's client-side apply sends (``$patch``, ``$retainKeys``,
  ``$setElementOrder/<field>``, ``$deleteFromPrimitiveList/<field>``);
  https://github.com/kubernetes/community/blob/master/contributors/devel/sig-api-machinery/strategic-merge-patch.md
- server-side apply, ``application/apply-patch+yaml``, approximated: the applied
  configuration is merged in (maps by key, ``x-kubernetes-list-type: map`` lists by
  their keys, sets as unions, other lists replaced) and the fields a manager applied
  before and no longer does are removed. Ownership is recorded in ``managedFields``
  (FieldsV1) for Apply operations only; conflicts with other managers are not
  detected (every apply acts as ``force=true``).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.kube._schema import SchemaCursor

__all__ = [
    "PatchError",
    "apply_merge",
    "fields_v1",
    "json_merge_patch",
    "json_patch",
    "remove_fields",
    "strategic_merge_patch",
]


class PatchError(ValueError):
    """A patch that does not apply (answered 422), or is malformed (400)."""

    def __init__(self, message: str, *, malformed: bool = False) -> None:
        super().__init__(message)
        self.malformed = malformed


# RFC 7386 ---------------------------------------------------------------------------


def json_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = json_merge_patch(out.get(key), value)
    return out


# RFC 6902 ---------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, adding: bool) -> int:
    if adding and token == "-":
        return len(container)
    if not token.isdigit():
        raise PatchError(f"invalid array index {token!r}")
    i = int(token)
    if i > len(container) or (not adding and i == len(container)):
        raise PatchError(f"array index {i} out of bounds")
    return i


def _walk(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        if isinstance(doc, dict):
            if token not in doc:
                raise PatchError(f"missing value at /{'/'.join(tokens)}")
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(doc, token, adding=False)]
        else:
            raise PatchError(f"cannot traverse into /{'/'.join(tokens)}")
    return doc


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _walk(doc, tokens[:-1])
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, tokens[-1], adding=True), value)
    else:
        raise PatchError("add to a scalar")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("cannot remove the root")
    parent = _walk(doc, tokens[:-1])
    if isinstance(parent, dict):
        if tokens[-1] not in parent:
            raise PatchError(f"Unable to remove nonexistent key: {tokens[-1]}: missing value")
        return parent.pop(tokens[-1])
    if isinstance(parent, list):
        return parent.pop(_index(parent, tokens[-1], adding=False))
    raise PatchError("remove from a scalar")


def json_patch(target: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchError("json patch must be a list of operations", malformed=True)
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid operation {op!r}", malformed=True)
        kind, tokens = op["op"], _pointer(op["path"])
        if kind == "add":
            doc = _add(doc, tokens, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, tokens)
        elif kind == "replace":
            _walk(doc, tokens)  # must exist
            if tokens:
                _remove(doc, tokens)
            doc = _add(doc, tokens, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = _remove(doc, source) if kind == "move" else copy.deepcopy(_walk(doc, source))
            doc = _add(doc, tokens, value)
        elif kind == "test":
            if _walk(doc, tokens) != op.get("value"):
                raise PatchError(f"testing value {op['path']} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}", malformed=True)
    return doc


# Strategic merge patch ----------------------------------------------------------


def _merge_key_value(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, dict) else item


def _smp_list(original: list[Any], patch: list[Any], cursor: SchemaCursor,
              merge_key: str | None) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [p for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    if merge_key is None:  # a merge-strategy list of primitives: union, original order
        out = list(original)
        out += [p for p in patch if p not in out]
        return out
    out = [copy.deepcopy(o) for o in original]
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"merge list item {item!r} is not an object")
        key = item.get(merge_key)
        pos = next((i for i, o in enumerate(out) if _merge_key_value(o, merge_key) == key),
                   None)
        if item.get("$patch") == "delete":
            out = [o for o in out if _merge_key_value(o, merge_key) != key]
        elif pos is None:
            out.append(_smp_map({}, item, cursor.items()))
        else:
            out[pos] = _smp_map(out[pos], item, cursor.items())
    return out


def _order(items: list[Any], order: list[Any], merge_key: str | None) -> list[Any]:
    """``$setElementOrder``: the listed items in that order, the others after."""
    keyed = [_merge_key_value(o, merge_key) if merge_key else o for o in order]
    def rank(item: Any) -> int:
        key = _merge_key_value(item, merge_key) if merge_key else item
        return keyed.index(key) if key in keyed else len(keyed)
    return sorted(items, key=rank)


def _smp_map(original: dict[str, Any], patch: dict[str, Any],
             cursor: SchemaCursor) -> dict[str, Any]:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    out = dict(original)
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            out[field] = [v for v in out.get(field) or [] if v not in value]
            continue
        if value is None:
            out.pop(key, None)
            continue
        strategies, merge_key = cursor.patch_meta(key)
        current = out.get(key)
        if isinstance(value, dict) and value.get("$patch") == "delete":
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(current, dict):
            out[key] = _smp_map(current, value, cursor.field(key))
        elif isinstance(value, list) and isinstance(current, list) and "merge" in strategies:
            out[key] = _smp_list(current, value, cursor.field(key), merge_key)
        elif isinstance(value, dict):
            out[key] = _smp_map({}, value, cursor.field(key))
        elif isinstance(value, list):
            out[key] = _smp_list([], value, cursor.field(key), merge_key) \
                if "merge" in strategies else _strip(value)
        else:
            out[key] = value
    for field, order in orders.items():
        if isinstance(out.get(field), list):
            out[field] = _order(out[field], order, cursor.patch_meta(field)[1])
    if "$retainKeys" in patch:
        keep = set(patch["$retainKeys"])
        out = {k: v for k, v in out.items() if k in keep}
    return out


def _strip(value: Any) -> Any:
    """Directive-free copy of a patch value stored as is."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def strategic_merge_patch(original: dict[str, Any], patch: Any,
                          cursor: SchemaCursor) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be an object", malformed=True)
    return _strip_nulls(_smp_map(original, patch, cursor))


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items()
                if v is not None and not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


# Server-side apply --------------------------------------------------------------


def _item_key(item: Any, keys: list[str]) -> str:
    if not isinstance(item, dict):
        return "v:" + json.dumps(item, sort_keys=True)
    return "k:" + json.dumps({k: item.get(k) for k in keys}, sort_keys=True,
                             separators=(",", ":"))


def fields_v1(applied: Any, cursor: SchemaCursor) -> dict[str, Any]:
    """The FieldsV1 set of an applied configuration: ``f:<field>``, list-map items as
    ``k:{...}`` and set members as ``v:<value>``, atomic lists as leaves."""
    out: dict[str, Any] = {}
    if not isinstance(applied, dict):
        return out
    for key, value in applied.items():
        sub = cursor.field(key)
        if isinstance(value, dict) and value:
            out[f"f:{key}"] = fields_v1(value, sub)
        elif isinstance(value, list):
            kind, keys = cursor.list_type(key)
            if kind == "map" and keys:
                out[f"f:{key}"] = {_item_key(i, keys): {".": {}, **fields_v1(i, sub.items())}
                                   for i in value}
            elif kind == "set":
                out[f"f:{key}"] = {_item_key(i, []): {} for i in value}
            else:
                out[f"f:{key}"] = {}
        else:
            out[f"f:{key}"] = {}
    return out


def apply_merge(live: Any, applied: Any, cursor: SchemaCursor) -> Any:
    """Merge an applied configuration into the live object."""
    if not (isinstance(live, dict) and isinstance(applied, dict)):
        return copy.deepcopy(applied)
    out = dict(live)
    for key, value in applied.items():
        current = out.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            out[key] = apply_merge(current, value, cursor.field(key))
        elif isinstance(value, list) and isinstance(current, list):
            kind, keys = cursor.list_type(key)
            if kind == "map" and keys:
                merged = [copy.deepcopy(c) for c in current]
                for item in value:
                    k = _item_key(item, keys)
                    pos = next((i for i, c in enumerate(merged) if _item_key(c, keys) == k),
                               None)
                    if pos is None:
                        merged.append(copy.deepcopy(item))
                    else:
                        merged[pos] = apply_merge(merged[pos], item, cursor.field(key).items())
                out[key] = merged
            elif kind == "set":
                out[key] = current + [v for v in value if v not in current]
            else:
                out[key] = copy.deepcopy(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def remove_fields(obj: Any, fields: dict[str, Any], keep: dict[str, Any]) -> Any:
    """Remove from ``obj`` the fields of set ``fields`` that set ``keep`` does not
    hold (what a manager applied before and applies no longer)."""
    if not isinstance(obj, dict):
        return obj
    out = dict(obj)
    for path, sub in fields.items():
        key = path[2:]
        if not path.startswith("f:") or key not in out:
            continue
        kept = keep.get(path)
        if not sub:  # a leaf: a scalar, an atomic list, an empty map
            if kept is None:
                del out[key]
        elif isinstance(out[key], dict):
            out[key] = remove_fields(out[key], sub, kept or {})
        elif isinstance(out[key], list):
            out[key] = [item for item in out[key] if not _dropped_item(item, sub, kept or {})]
    return out


def _dropped_item(item: Any, owned: dict[str, Any], kept: dict[str, Any]) -> bool:
    for member in owned:
        if member in kept:
            continue
        if member.startswith("v:") and json.loads(member[2:]) == item:
            return True
        if member.startswith("k:") and isinstance(item, dict):
            keys = json.loads(member[2:])
            if all(item.get(k) == v for k, v in keys.items()):
                return True
    return False
