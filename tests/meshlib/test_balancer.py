"""Endpoint pickers: round robin, least request (P2C), ring hash."""

from __future__ import annotations

import collections
from dataclasses import dataclass

from meshlib._balancer import LeastRequestPicker, RingHashPicker, RoundRobinPicker, make_picker
from meshlib.xds import LbPolicy


@dataclass(eq=False)
class Ep:
    address: str
    weight: int = 1
    active: int = 0


def test_round_robin_visits_each_endpoint_in_turn():
    eps = [Ep(f"10.0.0.{i}:80") for i in range(3)]
    picker = RoundRobinPicker(eps)
    counts = collections.Counter(picker.pick().address for _ in range(300))
    assert sorted(counts.values()) == [100, 100, 100]


def test_empty_pickers_pick_nothing():
    for picker in (RoundRobinPicker([]), LeastRequestPicker([]), RingHashPicker([])):
        assert picker.pick("x") is None


def test_least_request_avoids_the_busy_endpoint():
    busy, idle = Ep("busy:1", active=10), Ep("idle:1")
    picker = LeastRequestPicker([busy, idle, Ep("idle:2")], choice_count=2)
    counts = collections.Counter(picker.pick().address for _ in range(3000))
    # busy wins only when both draws are busy: 1/9 of the time.
    assert counts["busy:1"] < 3000 * 0.2


def test_ring_hash_is_stable_spreads_and_moves_little():
    eps = [Ep(f"10.0.0.{i}:80") for i in range(4)]
    picker = RingHashPicker(eps, 1024, 8192)
    homes = {f"user-{i}": picker.pick(f"user-{i}").address for i in range(400)}
    assert all(picker.pick(k).address == v for k, v in homes.items())
    spread = collections.Counter(homes.values())
    assert len(spread) == 4 and min(spread.values()) > 50
    fewer = RingHashPicker(eps[:3], 1024, 8192)
    stayed = [k for k, v in homes.items() if v != eps[3].address]
    moved = sum(fewer.pick(k).address != homes[k] for k in stayed)
    # The ring is rebuilt with more points per endpoint, so a few keys move (as in
    # Envoy); most keys of the remaining endpoints stay put.
    assert moved < 0.25 * len(stayed)


def test_ring_hash_without_header_spreads_randomly():
    picker = RingHashPicker([Ep("a:1"), Ep("b:1")], 64, 1024)
    assert len({picker.pick(None).address for _ in range(100)}) == 2


def test_make_picker_follows_the_policy():
    eps = [Ep("a:1")]
    assert isinstance(make_picker(LbPolicy(), eps), RoundRobinPicker)
    assert isinstance(make_picker(LbPolicy(name="LEAST_REQUEST"), eps), LeastRequestPicker)
    assert isinstance(make_picker(LbPolicy(name="RING_HASH"), eps), RingHashPicker)
