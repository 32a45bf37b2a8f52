"""The control plane's Prometheus metrics, in a registry of its own.

Each :class:`ControlPlaneMetrics` owns a ``CollectorRegistry`` so several control
planes (tests, the demo) can live in one process without clashing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from xds_server.resources import ADS_ORDER, short_name

__all__ = ["LATENCY_BUCKETS", "ControlPlaneMetrics"]

# Seconds. Pushes on loopback take ~1 ms; a file reload of a large mesh, ~1 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ControlPlaneMetrics:
    """Counters and histograms the ADS server and the sources report into."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connected_clients = Gauge(
            "meshlib_xds_connected_clients",
            "ADS streams open now, by node kind and protocol.",
            ["kind", "protocol"],
            registry=r,
        )
        self.pushes = Counter(
            "meshlib_xds_pushes_total", "xDS responses sent, by type.", ["type"], registry=r
        )
        self.acks = Counter(
            "meshlib_xds_acks_total", "xDS responses ACKed, by type.", ["type"], registry=r
        )
        self.nacks = Counter(
            "meshlib_xds_nacks_total", "xDS responses NACKed, by type.", ["type"], registry=r
        )
        self.push_latency = Histogram(
            "meshlib_xds_push_latency_seconds",
            "From a snapshot being built to a response carrying it being sent.",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.reloads = Counter(
            "meshlib_config_reloads_total",
            "Configuration reloads by result (ok; invalid: rejected by validation; "
            "error: failed to translate).",
            ["result"],
            registry=r,
        )
        self.reload_duration = Histogram(
            "meshlib_config_reload_seconds",
            "From a config change being seen to the new snapshots being set.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.snapshot_groups = Gauge(
            "meshlib_xds_snapshot_groups", "Node groups with a snapshot.", registry=r
        )
        self.refused_groups = Counter(
            "meshlib_xds_refused_streams_total",
            "ADS streams refused because their identity reached its node-group limit.",
            registry=r,
        )
        self.model_objects = Gauge(
            "meshlib_config_objects", "Objects in the serving model, by kind.", ["kind"],
            registry=r,
        )
        self.certificates = Counter(
            "meshlib_ca_certificates_total",
            "Certificate requests by result (issued; unauthenticated; not_permitted; "
            "bad_csr; bad_request; rate_limited; no_authenticator; error).",
            ["result"],
            registry=r,
        )
        # Export zeros from the start, so rates and alerts work before the first event.
        for type_url in ADS_ORDER[:4]:
            label = short_name(type_url)
            for counter in (self.pushes, self.acks, self.nacks):
                counter.labels(label)
        for result in ("ok", "invalid", "error"):
            self.reloads.labels(result)

    def render(self) -> bytes:
        """Prometheus text exposition format."""
        return generate_latest(self.registry)
