"""Request bodies in Kubernetes' protobuf encoding, decoded to JSON-shaped dicts.

kubectl's typed clients (``kubectl create token|serviceaccount|namespace|configmap|
secret``) send ``Content-Type: application/vnd.kubernetes.protobuf``; client-go does
not fall back to JSON for it, so the fake reads it: the ``k8s\\0`` magic, a
``runtime.Unknown`` envelope, then the typed message. Only the messages those commands
send are known (field numbers from k8s.io/api and k8s.io/apimachinery
``generated.proto``, v0.32); answers are always JSON, which the clients accept.
https://kubernetes.io/docs/reference/using-api/api-concepts/#protobuf-encoding
"""

from __future__ import annotations

import base64
import time
from typing import Any

from tests.kube._errors import ApiError

__all__ = ["PROTOBUF", "decode_protobuf"]

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# message -> field number -> (json name, type, repeated); type: a scalar name or a message
Field = tuple[str, str, bool]
_MESSAGES: dict[str, dict[int, Field]] = {
    "Unknown": {1: ("typeMeta", "TypeMeta", False), 2: ("raw", "raw", False),
                3: ("contentEncoding", "string", False), 4: ("contentType", "string", False)},
    "TypeMeta": {1: ("apiVersion", "string", False), 2: ("kind", "string", False)},
    "ObjectMeta": {1: ("name", "string", False), 2: ("generateName", "string", False),
                   3: ("namespace", "string", False), 5: ("uid", "string", False),
                   6: ("resourceVersion", "string", False), 7: ("generation", "int", False),
                   8: ("creationTimestamp", "Time", False),
                   9: ("deletionTimestamp", "Time", False),
                   10: ("deletionGracePeriodSeconds", "int", False),
                   11: ("labels", "map<string,string>", False),
                   12: ("annotations", "map<string,string>", False),
                   13: ("ownerReferences", "OwnerReference", True),
                   14: ("finalizers", "string", True)},
    "OwnerReference": {5: ("apiVersion", "string", False), 1: ("kind", "string", False),
                       3: ("name", "string", False), 4: ("uid", "string", False),
                       6: ("controller", "bool", False),
                       7: ("blockOwnerDeletion", "bool", False)},
    "Time": {1: ("seconds", "int", False), 2: ("nanos", "int", False)},
    "TokenRequest": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "TokenRequestSpec", False)},
    "TokenRequestSpec": {1: ("audiences", "string", True), 4: ("expirationSeconds", "int", False),
                         3: ("boundObjectRef", "BoundObjectReference", False)},
    "BoundObjectReference": {1: ("kind", "string", False), 2: ("apiVersion", "string", False),
                             3: ("name", "string", False), 4: ("uid", "string", False)},
    "ServiceAccount": {1: ("metadata", "ObjectMeta", False),
                       2: ("secrets", "ObjectReference", True),
                       3: ("imagePullSecrets", "LocalObjectReference", True),
                       4: ("automountServiceAccountToken", "bool", False)},
    "ObjectReference": {1: ("kind", "string", False), 2: ("namespace", "string", False),
                        3: ("name", "string", False), 4: ("uid", "string", False),
                        5: ("apiVersion", "string", False)},
    "LocalObjectReference": {1: ("name", "string", False)},
    "Namespace": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "NamespaceSpec", False)},
    "NamespaceSpec": {1: ("finalizers", "string", True)},
    "ConfigMap": {1: ("metadata", "ObjectMeta", False), 4: ("immutable", "bool", False),
                  2: ("data", "map<string,string>", False),
                  3: ("binaryData", "map<string,bytes>", False)},
    "DeleteOptions": {1: ("gracePeriodSeconds", "int", False),
                      2: ("preconditions", "Preconditions", False),
                      3: ("orphanDependents", "bool", False),
                      4: ("propagationPolicy", "string", False), 5: ("dryRun", "string", True)},
    "Preconditions": {1: ("uid", "string", False), 2: ("resourceVersion", "string", False)},
    "Secret": {1: ("metadata", "ObjectMeta", False), 5: ("immutable", "bool", False),
               2: ("data", "map<string,bytes>", False),
               4: ("stringData", "map<string,string>", False), 3: ("type", "string", False)},
}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a message: ints for varints, bytes otherwise."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            out.append((number, data[pos:pos + length]))
            pos += length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            out.append((number, data[pos:pos + size]))
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _scalar(kind: str, value: int | bytes) -> Any:
    if kind == "string":
        assert isinstance(value, bytes)
        return value.decode()
    if kind == "bytes":
        assert isinstance(value, bytes)
        return base64.b64encode(value).decode()
    if kind == "bool":
        return bool(value)
    if kind == "int":
        assert isinstance(value, int)
        return value - (1 << 64) if value >= 1 << 63 else value
    return value  # raw


def _message(name: str, data: bytes) -> Any:
    if name == "Time":
        fields = dict(_fields(data))
        seconds = fields.get(1, 0)
        assert isinstance(seconds, int)
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    schema = _MESSAGES[name]
    out: dict[str, Any] = {}
    for number, value in _fields(data):
        if number not in schema:
            continue  # a field this fake does not know: dropped, as pruning would
        json_name, kind, repeated = schema[number]
        if kind.startswith("map<"):
            assert isinstance(value, bytes)
            entry = dict(_fields(value))
            val_kind = kind[4:-1].split(",")[1]
            out.setdefault(json_name, {})[_scalar("string", entry.get(1, b""))] = \
                _scalar(val_kind, entry.get(2, b""))
            continue
        if kind in _MESSAGES or kind == "Time":
            assert isinstance(value, bytes)
            decoded = _message(kind, value)
        else:
            decoded = _scalar(kind, value)
        if repeated:
            out.setdefault(json_name, []).append(decoded)
        else:
            out[json_name] = decoded
    return out


def decode_protobuf(body: bytes) -> dict[str, Any]:
    """A protobuf-encoded object as the dict its JSON form would give; 415 for a kind
    this fake does not know."""
    if not body.startswith(MAGIC):
        raise ApiError.bad_request("provided object is not protobuf-encoded (no k8s magic)")
    try:
        envelope = _message("Unknown", body[len(MAGIC):])
        type_meta = envelope.get("typeMeta") or {}
        kind = type_meta.get("kind", "")
        if kind not in _MESSAGES or kind in ("Unknown", "TypeMeta", "Time", "ObjectMeta"):
            raise ApiError.unsupported_media_type(f"{PROTOBUF} ({kind or 'no kind'})")
        obj = _message(kind, envelope.get("raw", b""))
    except (ValueError, IndexError, KeyError, UnicodeDecodeError) as exc:
        raise ApiError.bad_request(f"unable to decode protobuf body: {exc}") from None
    if type_meta.get("apiVersion"):
        obj["apiVersion"] = type_meta["apiVersion"]
    obj["kind"] = kind
    return obj
