"""The small interface between the ADS server and a cache: watches.

A stream asks, per type, "answer me when what I should have differs from what I have"
(:class:`WatchRequest`); the cache calls ``respond`` once with a :class:`Response`
(state of the world) or a :class:`DeltaResponse`, or never if the watch is cancelled
first. Watches are one-shot: the stream opens the next one when the client ACKs or
NACKs (go-control-plane's ``ConfigWatcher``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from envoy.config.core.v3 import base_pb2

from xds_server.cache.snapshot import Resource, Snapshot
from xds_server.resources import FULL_STATE_TYPES  # missing in SotW = does not exist

__all__ = [
    "ABSENT",
    "FULL_STATE_TYPES",
    "WILDCARD",
    "Cancel",
    "ConfigWatcher",
    "DeltaResponse",
    "Response",
    "WatchRequest",
]

WILDCARD = "*"

# A version in ``WatchRequest.known`` meaning "the client was told this does not exist".
ABSENT = ""

Cancel = Callable[[], None]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class WatchRequest:
    """What one stream subscribes to for one type, and what it already has.

    ``known`` maps names to the versions the client was last sent (``ABSENT`` for "told
    it does not exist"); ``answered`` is False until the stream got a first response of
    this type. ``version_info`` is what a state-of-the-world client says it has (on
    reconnect, before any response on this stream).
    """

    stream_id: int
    node: base_pb2.Node
    type_url: str
    names: frozenset[str] = frozenset()
    wildcard: bool = False
    known: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    answered: bool = False
    version_info: str = ""


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Response:
    """A state-of-the-world answer: every subscribed resource that exists.

    ``absent`` lists subscribed names that do not exist (clients of full-state types
    learn that from their omission).
    """

    request: WatchRequest
    version: str
    resources: tuple[Resource, ...]
    absent: tuple[str, ...]
    snapshot: Snapshot


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class DeltaResponse:
    """An incremental answer: changed resources and names to remove."""

    request: WatchRequest
    system_version: str
    resources: tuple[Resource, ...]
    removed: tuple[str, ...]
    snapshot: Snapshot


class ConfigWatcher(Protocol):
    """What the ADS server needs of a cache."""

    def group_key(self, node: base_pb2.Node) -> str:
        """The snapshot group ``node`` belongs to."""
        ...

    def create_watch(self, request: WatchRequest, respond: Callable[[Response], None]) -> Cancel:
        """Call ``respond`` once when the state-of-the-world answer differs from
        ``request.known`` (possibly before returning); return a cancel function."""
        ...

    def create_delta_watch(
        self, request: WatchRequest, respond: Callable[[DeltaResponse], None]
    ) -> Cancel:
        """Call ``respond`` once when a subscribed resource changed, appeared or was
        removed (possibly before returning); return a cancel function."""
        ...
