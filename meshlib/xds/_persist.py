"""The last good xDS config on disk, so a new process can start serving from it while
the control plane is unreachable (``XdsClientConfig.cache_path``).

The file is small, versioned UTF-8 JSON; resources are kept as the serialized
``google.protobuf.Any`` the control plane sent (base64), so they are decoded and
validated again on load, by the same decoders as the wire::

    {
      "format": "meshlib.xds.cache",
      "version": 1,
      "namespace": "default",          # a file written for another namespace is ignored
      "node_id": "reviews-7f9c",       # informational
      "server_address": "xds:15010",   # informational
      "types": [
        {"type_url": "type.googleapis.com/envoy.config.listener.v3.Listener",
         "version_info": "",           # state of the world: the accepted version, or ""
         "resources": [
           {"name": "reviews",
            "version": "5f1c…",         # delta: the resource's own version, or ""
            "resource": "CjR0eXBl…"}]}  # base64 of the serialized Any
      ]
    }

Both versions are opaque strings the client replays on its first request (SotW
``version_info``, delta ``initial_resource_versions``) so the control plane sends only
what changed; an empty one just makes it send everything.

:class:`LastGoodConfig` is how :class:`~meshlib.xds.XdsClient` uses the file: it hands
the restored values to the state machine as names get watched (until the control plane
first answers), and writes what the state machine accepted, plus — on the final write
at close only — the values unwatched since the last write, because an application that
shuts down drops its watches before it closes the client.

Reading never fails the caller: a missing file is no cache; a corrupt one is logged and
ignored; an invalid resource (or one of a type without a decoder) is skipped with a
warning. Writing is atomic (a temporary file in the same directory, ``fsync``, then
``os.replace``), mode 0600, and a failure is logged, never raised. :class:`CacheWriter`
debounces writes on the event loop: at most one per ``interval``, and a last one on
close if anything changed since.

Example::

    contents = read_cache("/var/cache/meshlib/xds.json", namespace="default")
    write_atomic("/var/cache/meshlib/xds.json", dumps(contents))
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from google.protobuf import any_pb2, message

from meshlib.contract.files import write_atomic as _write_private
from meshlib.xds._ads_protocol import AdsClientProtocol, CachedResource, decode_resource
from meshlib.xds._decoders import DECODERS, Decoder
from meshlib.xds._delta_protocol import DeltaAdsClientProtocol
from meshlib.xds._resources import ResourceValidationError, short_name

__all__ = [
    "CACHE_FILE_FORMAT",
    "CACHE_FILE_VERSION",
    "CacheContents",
    "CacheWriter",
    "LastGoodConfig",
    "dumps",
    "loads",
    "read_cache",
    "write_atomic",
]

log = logging.getLogger(__name__)

_Key = tuple[str, str]  # (type URL, resource name)
_Ads = AdsClientProtocol | DeltaAdsClientProtocol

CACHE_FILE_FORMAT = "meshlib.xds.cache"
CACHE_FILE_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheContents:
    """What a cache file holds: per type URL the accepted resources (``version``: the
    delta per-resource version or ``""``) and the state-of-the-world ``version_info``."""

    namespace: str
    resources: Mapping[str, tuple[CachedResource, ...]] = field(
        default_factory=lambda: MappingProxyType({}))
    version_info: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    node_id: str = ""
    server_address: str = ""

    def __len__(self) -> int:
        return sum(len(entries) for entries in self.resources.values())


def dumps(contents: CacheContents) -> bytes:
    """``contents`` in the file format (deterministic: equal contents, equal bytes)."""
    type_urls = sorted(set(contents.resources) | set(contents.version_info))
    doc = {
        "format": CACHE_FILE_FORMAT,
        "version": CACHE_FILE_VERSION,
        "namespace": contents.namespace,
        "node_id": contents.node_id,
        "server_address": contents.server_address,
        "types": [
            {
                "type_url": type_url,
                "version_info": contents.version_info.get(type_url, ""),
                "resources": [
                    {
                        "name": entry.name,
                        "version": entry.version,
                        "resource": base64.b64encode(
                            entry.resource.SerializeToString(deterministic=True)).decode(),
                    }
                    for entry in sorted(contents.resources.get(type_url, ()),
                                        key=lambda e: e.name)
                ],
            }
            for type_url in type_urls
        ],
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def loads(data: bytes, *, decoders: Mapping[str, Decoder] = DECODERS) -> CacheContents:
    """Parse a cache file; raises ``ValueError`` if it is not one (of this version).

    Each resource is decoded and validated again; an invalid one is skipped with a
    warning, as is every resource of a type without a decoder.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not JSON: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FILE_FORMAT:
        raise ValueError(f"not a {CACHE_FILE_FORMAT} file")
    if doc.get("version") != CACHE_FILE_VERSION:
        raise ValueError(f"unsupported version {doc.get('version')!r} "
                         f"(this meshlib reads {CACHE_FILE_VERSION})")
    resources: dict[str, tuple[CachedResource, ...]] = {}
    version_info: dict[str, str] = {}
    for item in _list(doc, "types"):
        type_url = _str(item, "type_url")
        decoder = decoders.get(type_url)
        if decoder is None:
            log.warning("xDS cache file: type %s has no decoder; its resources are skipped",
                        type_url)
            continue
        if version := _str(item, "version_info"):
            version_info[type_url] = version
        entries = [e for r in _list(item, "resources")
                   if (e := _entry(type_url, decoder, r)) is not None]
        if entries:
            resources[type_url] = tuple(entries)
    return CacheContents(
        namespace=_str(doc, "namespace"), resources=MappingProxyType(resources),
        version_info=MappingProxyType(version_info), node_id=_str(doc, "node_id"),
        server_address=_str(doc, "server_address"))


def read_cache(path: str | os.PathLike[str], *, namespace: str,
               decoders: Mapping[str, Decoder] = DECODERS) -> CacheContents | None:
    """The contents of the cache file at ``path``, or None if there is none, it cannot
    be read, it is corrupt, or it was written for another namespace (logged)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        log.warning("xDS cache file %s cannot be read, ignored: %s", path, err)
        return None
    try:
        contents = loads(data, decoders=decoders)
    except ValueError as err:
        log.warning("xDS cache file %s is corrupt, ignored: %s", path, err)
        return None
    if contents.namespace != namespace:
        log.warning("xDS cache file %s was written for namespace %r, not %r; ignored",
                    path, contents.namespace, namespace)
        return None
    return contents


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace the file at ``path`` with ``data`` atomically (mode 0600, its directory
    made 0700 if missing); raises ``OSError``. Readers see the old file or the new one,
    never a mix."""
    target = Path(path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(target, data, mode=0o600)


class CacheWriter:
    """Writes ``contents(final)`` to ``path`` after changes, at most once per
    ``interval`` seconds, on the running event loop (the file is small: no thread).

    :meth:`changed` marks the cache dirty and schedules a write (at once if the last one
    is ``interval`` old); :meth:`close` writes once more, with ``final=True``, if
    anything changed since. Bytes equal to the last written ones are not written again.
    """

    def __init__(self, path: str | os.PathLike[str],
                 contents: Callable[[bool], CacheContents], *, interval: float) -> None:
        self.path = path
        self._contents = contents
        self._interval = interval
        self._timer: asyncio.TimerHandle | None = None
        self._dirty = False
        self._last_time: float | None = None
        self._last_bytes: bytes | None = None
        self._failing = False

    def changed(self) -> None:
        """The accepted resources changed: write them soon."""
        self._dirty = True
        if self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        delay = 0.0
        if self._last_time is not None:
            delay = max(0.0, self._last_time + self._interval - loop.time())
        self._timer = loop.call_later(delay, self._write, False)

    def close(self) -> None:
        """Cancel the pending write and write now (``final=True``) if anything changed."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._dirty:
            self._write(True)

    def _write(self, final: bool) -> None:
        self._timer = None
        self._dirty = False
        self._last_time = asyncio.get_running_loop().time()
        data = dumps(self._contents(final))
        if data == self._last_bytes:
            return
        try:
            write_atomic(self.path, data)
        except OSError as err:
            if not self._failing:  # once per failing streak
                log.warning("cannot write the xDS cache file %s: %s", self.path, err)
            self._failing = True
            return
        if self._failing:
            log.info("xDS cache file %s written again", self.path)
        self._failing = False
        self._last_bytes = data


class LastGoodConfig:
    """The cache file of one :class:`~meshlib.xds.XdsClient`; ``ads()`` returns its
    current state machine (it changes if the client falls back from delta to SotW).

    Versions are kept as the file wants them: a resource's own version only from delta
    (a SotW resource is versioned by its response), ``version_info`` only from SotW.
    """

    def __init__(self, path: str | os.PathLike[str], ads: Callable[[], _Ads], *,
                 namespace: str, node_id: str = "", server_address: str = "",
                 interval: float) -> None:
        self.path = path
        self._ads = ads
        self._namespace = namespace
        self._node_id = node_id
        self._server_address = server_address
        self._writer = CacheWriter(path, self._contents, interval=interval)
        self._seeds: dict[_Key, CachedResource] = {}  # restored, not watched yet
        self._seed_versions: dict[str, str] = {}  # SotW version_info by type URL
        self._released: dict[_Key, CachedResource] = {}  # unwatched since the last write

    def restore(self) -> None:
        """Read the file (if any): its values wait for :meth:`claim`."""
        contents = read_cache(self.path, namespace=self._namespace)
        if contents is None:
            return
        for type_url, entries in contents.resources.items():
            for entry in entries:
                self._seeds[(type_url, entry.name)] = entry
        self._seed_versions = dict(contents.version_info)
        log.info("restored %d xDS resources from %s", len(contents), self.path)

    def claim(self, key: _Key) -> bool:
        """``key`` is now watched: seed the state machine with its restored value, if
        any and it has none; True if it got one."""
        self._released.pop(key, None)
        entry = self._seeds.pop(key, None)
        ads = self._ads()
        type_url, name = key
        if entry is None or name in ads.resources(type_url):
            return False
        if isinstance(ads, DeltaAdsClientProtocol):
            ads.seed(type_url, [entry])
        else:  # SotW has one version per type, not per resource
            ads.seed(type_url, [replace(entry, version="")], self.sotw_version(type_url))
        return name in ads.resources(type_url)

    def release(self, key: _Key) -> None:
        """``key`` is about to be unwatched: keep its value for a final write."""
        entry = self._ads().cached_resources(key[0]).get(key[1])
        if entry is not None:
            self._released[key] = self._file_entry(entry)

    def sotw_version(self, type_url: str) -> str:
        """The restored state-of-the-world ``version_info`` of ``type_url``, or ``""``."""
        return self._seed_versions.get(type_url, "")

    def connected(self) -> None:
        """The control plane answered: restored values not watched yet are not needed."""
        self._seeds.clear()
        self._seed_versions.clear()

    def changed(self) -> None:
        """The state machine accepted a response: write soon."""
        self._writer.changed()

    def close(self) -> None:
        """The final write, if anything changed since the last one."""
        self._writer.close()

    def _file_entry(self, entry: CachedResource) -> CachedResource:
        delta = isinstance(self._ads(), DeltaAdsClientProtocol)
        return entry if delta else replace(entry, version="")

    def _contents(self, final: bool) -> CacheContents:
        ads = self._ads()
        resources: dict[str, dict[str, CachedResource]] = {}
        for type_url in DECODERS:
            entries = resources[type_url] = {
                name: self._file_entry(entry)
                for name, entry in ads.cached_resources(type_url).items()}
            if final:
                for (released_type, name), entry in self._released.items():
                    if released_type == type_url:
                        entries.setdefault(name, entry)
        if not final:
            self._released.clear()
        sotw = isinstance(ads, AdsClientProtocol)
        return CacheContents(
            namespace=self._namespace, node_id=self._node_id,
            server_address=self._server_address,
            resources=MappingProxyType(
                {t: tuple(by_name.values()) for t, by_name in resources.items() if by_name}),
            version_info=MappingProxyType(
                {t: v for t in resources if sotw and (v := ads.version(t))}))


def _entry(type_url: str, decoder: Decoder, item: Any) -> CachedResource | None:
    name = item.get("name") if isinstance(item, dict) else None
    try:
        name = _str(item, "name")
        resource = any_pb2.Any()
        resource.ParseFromString(base64.b64decode(_str(item, "resource"), validate=True))
        decoded_name, update = decode_resource(decoder, type_url, resource, name)
    except ResourceValidationError as err:
        log.warning("xDS cache file: %s; skipped", err)
        return None
    except (ValueError, message.DecodeError) as err:  # binascii.Error is a ValueError
        log.warning("xDS cache file: %s resource %r cannot be read (%s); skipped",
                    short_name(type_url), name, err)
        return None
    return CachedResource(decoded_name, update, _str(item, "version"), resource)


def _list(doc: Any, key: str) -> list[Any]:
    value = doc.get(key, []) if isinstance(doc, dict) else None
    if not isinstance(value, list):
        raise ValueError(f"{key!r} is not a list")
    return value


def _str(doc: Any, key: str) -> str:
    value = doc.get(key, "") if isinstance(doc, dict) else None
    if not isinstance(value, str):
        raise ValueError(f"{key!r} is not a string")
    return value
