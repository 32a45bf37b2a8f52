"""Telemetry: Prometheus golden metrics (server side so far; see docs/telemetry.md)."""

from meshlib.telemetry._metrics import DURATION_BUCKETS, MeshMetrics

__all__ = ["DURATION_BUCKETS", "MeshMetrics"]
