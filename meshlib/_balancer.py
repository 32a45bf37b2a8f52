"""Endpoint pickers: ROUND_ROBIN, LEAST_REQUEST (power of two choices), RING_HASH.

A picker is immutable and built from the endpoints that may take calls now (healthy,
not ejected); the cluster swaps in a new one when that set changes. ``pick`` is the
per-call hot path: no locks, no allocation beyond what the policy needs.

* Round robin walks the endpoints with a shared ``itertools.count`` (atomic in CPython).
* Least request draws ``choice_count`` endpoints at random and takes the one with the
  fewest calls in flight (gRFC A48; Envoy's P2C).
* Ring hash places each endpoint on a ring ``minimum_ring_size``..``maximum_ring_size``
  points large, in proportion to its weight (gRFC A42), and hashes the request header
  named by the route's hash policy; without the header a call lands at random. The
  hash is BLAKE2b, not Envoy's xxHash: stickiness holds within meshlib clients, which
  is what a client-side ring is for.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
from collections.abc import Sequence
from typing import Protocol

from meshlib.xds import LbPolicy

__all__ = [
    "LeastRequestPicker",
    "PickTarget",
    "Picker",
    "RingHashPicker",
    "RoundRobinPicker",
    "make_picker",
]


class PickTarget(Protocol):
    """What a picker needs of an endpoint."""

    address: str
    weight: int
    active: int


class Picker(Protocol):
    """Chooses one endpoint per call; ``hash_key`` is the ring-hash input, if any."""

    endpoints: Sequence[PickTarget]

    def pick(self, hash_key: str | None = None) -> PickTarget | None: ...


class RoundRobinPicker:
    """Each endpoint in turn, starting at a random offset (so clients spread)."""

    __slots__ = ("_count", "_n", "endpoints")

    def __init__(self, endpoints: Sequence[PickTarget]) -> None:
        self.endpoints = tuple(endpoints)
        self._n = len(self.endpoints)
        self._count = itertools.count(random.randrange(max(self._n, 1)))

    def pick(self, hash_key: str | None = None) -> PickTarget | None:
        if self._n == 0:
            return None
        return self.endpoints[next(self._count) % self._n]


class LeastRequestPicker:
    """The fewest in-flight calls among ``choice_count`` random endpoints."""

    __slots__ = ("_choices", "_n", "endpoints")

    def __init__(self, endpoints: Sequence[PickTarget], choice_count: int = 2) -> None:
        self.endpoints = tuple(endpoints)
        self._n = len(self.endpoints)
        self._choices = choice_count

    def pick(self, hash_key: str | None = None) -> PickTarget | None:
        n = self._n
        if n <= 1:
            return self.endpoints[0] if n else None
        endpoints = self.endpoints
        best = endpoints[random.randrange(n)]
        for _ in range(self._choices - 1):
            other = endpoints[random.randrange(n)]
            if other.active < best.active:
                best = other
        return best


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class RingHashPicker:
    """Consistent hashing of a request header onto a weighted ring."""

    __slots__ = ("_hashes", "_owners", "endpoints")

    def __init__(self, endpoints: Sequence[PickTarget], minimum_ring_size: int = 1024,
                 maximum_ring_size: int = 8 * 1024 * 1024) -> None:
        self.endpoints = tuple(endpoints)
        points: list[tuple[int, PickTarget]] = []
        if self.endpoints:
            total = sum(e.weight for e in self.endpoints)
            smallest = min(e.weight for e in self.endpoints) / total
            # gRFC A42: scale so the lightest endpoint gets at least one point.
            size = min(max(minimum_ring_size, int(1 / smallest + 0.5)), maximum_ring_size)
            for endpoint in self.endpoints:
                count = max(1, round(size * endpoint.weight / total))
                points.extend((_hash(f"{endpoint.address}_{i}"), endpoint)
                              for i in range(count))
        points.sort(key=lambda p: p[0])
        self._hashes = [h for h, _ in points]
        self._owners = [e for _, e in points]

    def pick(self, hash_key: str | None = None) -> PickTarget | None:
        if not self._owners:
            return None
        key = _hash(hash_key) if hash_key is not None else random.getrandbits(64)
        index = bisect.bisect_left(self._hashes, key)
        return self._owners[index % len(self._owners)]


def make_picker(policy: LbPolicy, endpoints: Sequence[PickTarget]) -> Picker:
    """The picker ``policy`` names, over ``endpoints``."""
    if policy.name == "LEAST_REQUEST":
        return LeastRequestPicker(endpoints, policy.choice_count)
    if policy.name == "RING_HASH":
        # Our rings stay small: 1024 points per endpoint at most is plenty for spread.
        return RingHashPicker(endpoints, policy.minimum_ring_size,
                              min(policy.maximum_ring_size, 1024 * max(len(endpoints), 1)))
    return RoundRobinPicker(endpoints)
