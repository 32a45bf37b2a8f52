"""Gateway API durations (GEP-2257)."""

from __future__ import annotations

import pytest

from xds_server.sources.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0.0),
        ("1s", 1.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1h30m45s500ms", 5445.5),
        ("2s500ms", 2.5),
        ("99999ms", 99.999),
        ("1m1m", 120.0),  # the pattern allows repeated units; Go sums them too
    ],
)
def test_valid(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "1", "1.5s", "-1s", "1d", "1us", "100000s", "1h1m1s1ms1s", " 1s", "1S", "1 s"],
)
def test_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.25, "250ms"), (90, "1m30s"), (3600, "1h"), (5445.5, "1h30m45s500ms")],
)
def test_format_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
