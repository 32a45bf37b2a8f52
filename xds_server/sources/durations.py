"""Gateway API durations (GEP-2257): ``1s``, ``500ms``, ``1m30s`` → float seconds.

The format is a strict subset of Go's ``time.ParseDuration``: one to four
``<number><unit>`` parts, numbers of at most five digits, units ``h``, ``m``, ``s``
and ``ms``. See https://gateway-api.sigs.k8s.io/geps/gep-2257/.
"""

from __future__ import annotations

import re

__all__ = ["DURATION_PATTERN", "format_duration", "parse_duration"]

#: The GEP-2257 pattern, also used verbatim by the CRD schemas in ``deploy/crds``.
DURATION_PATTERN = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"

_DURATION_RE = re.compile(DURATION_PATTERN)
_PART_RE = re.compile(r"([0-9]{1,5})(ms|h|m|s)")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    """Seconds in a GEP-2257 duration; raises :class:`ValueError` if ``text`` is not one.

    >>> parse_duration("1m30s"), parse_duration("500ms")
    (90.0, 0.5)
    """
    if not isinstance(text, str) or not _DURATION_RE.fullmatch(text):
        raise ValueError(f"not a duration: {text!r}")
    total_ms = sum(int(n) * int(_SECONDS[unit] * 1000) for n, unit in _PART_RE.findall(text))
    return total_ms / 1000.0


def format_duration(seconds: float) -> str:
    """The shortest GEP-2257 spelling of ``seconds`` (rounded to milliseconds).

    >>> format_duration(90.0), format_duration(0.25)
    ('1m30s', '250ms')
    """
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
