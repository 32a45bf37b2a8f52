"""meshlib.contract: its public names, its independence, and both sides using it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import meshlib
import meshlib.contract
import meshlib.errors
from meshlib.contract import DEFAULT_NAMESPACE, MESHLIB_NODE
from meshlib.resilience import RetryBudget
from meshlib.xds import XdsClientConfig
from xds_server import model, resources
from xds_server.node import group_of

ROOT = Path(__file__).resolve().parents[3]
MODULES = sorted(m.name for m in pkgutil.iter_modules(meshlib.contract.__path__))


def test_public_names_are_pinned():
    assert sorted(meshlib.contract.__all__) == sorted([
        "CA_FILE", "CERT_FILE", "CLUSTER", "DEFAULT_BREAKER_FAILURES",
        "DEFAULT_BREAKER_HALF_OPEN_PROBES", "DEFAULT_BREAKER_OPEN_DURATION",
        "DEFAULT_MAX_REQUESTS", "DEFAULT_MIN_RETRIES_PER_SECOND", "DEFAULT_MTLS_MODE",
        "DEFAULT_NAMESPACE", "DEFAULT_RETRY_BUDGET_PERCENT", "DEFAULT_RETRY_BUDGET_WINDOW",
        "DEFAULT_TRACING_SAMPLING", "DEFAULT_TRUST_DOMAIN", "ENDPOINT", "ENVOY_NODE",
        "FULL_STATE_TYPES", "GRPC_NODE", "KEY_FILE", "KIND_METADATA_KEY", "LISTENER",
        "MESHLIB_METADATA", "MESHLIB_NODE", "MTLS_MODES", "NAMESPACE_METADATA_KEY",
        "NODE_KINDS", "NO_REUSEPORT", "OUTBOUND_PORT_METADATA_KEY", "ROUTE", "SECRET",
        "SERVER_LISTENER_TEMPLATE", "TLS_METADATA_KEY", "TYPE_URL_PREFIX",
        "BindError", "CertificateError", "CircuitBreakerConfig", "ClusterMetadata", "ConfigError",
        "InconsistentSnapshotError", "MeshError", "MtlsMode", "NodeKind",
        "PEER_IDENTITY_METADATA_KEY", "Problem", "RetryBudgetConfig", "SpiffeId", "XdsError",
        "check_free", "one_spiffe_uri", "outbound_cluster_name", "server_listener_name",
        "service_of", "short_name",
    ])
    assert MODULES == ["ca", "cluster_metadata", "defaults", "errors", "files", "listen", "names",
                       "node", "regex", "resources", "spiffe", "x509"]


def test_every_module_is_documented_and_declares_its_names():
    for name in MODULES:
        module = importlib.import_module(f"meshlib.contract.{name}")
        assert module.__doc__, name
        for public in module.__all__:
            value = getattr(module, public)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert value.__doc__, f"{name}.{public}"


def test_importing_it_loads_nothing_heavy_and_nothing_else_of_meshlib():
    """Run with the ``meshlib`` package itself stubbed out, so only what the contract
    imports gets loaded."""
    code = textwrap.dedent(f"""
        import sys, types
        stub = types.ModuleType("meshlib")
        stub.__path__ = [{str(ROOT / "meshlib")!r}]
        sys.modules["meshlib"] = stub
        import meshlib.contract
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("grpc", "google", "cryptography", "envoy")
                       or (m.startswith("meshlib.") and not m.startswith("meshlib.contract")))
        print(heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_the_library_and_the_control_plane_share_one_definition():
    assert meshlib.MeshError is meshlib.errors.MeshError is meshlib.contract.MeshError
    assert issubclass(meshlib.errors.CallError, meshlib.contract.MeshError)
    assert meshlib.SpiffeId is meshlib.contract.SpiffeId
    assert resources.CLUSTER is meshlib.contract.CLUSTER
    assert model.DEFAULT_NAMESPACE == DEFAULT_NAMESPACE


def test_a_meshlib_node_is_grouped_as_meshlib():
    node = XdsClientConfig(server_address="x:1", node_id="n1", namespace="shop").node()
    group = group_of(node)
    assert (group.kind, group.namespace, group.tls) == (MESHLIB_NODE, "shop", True)


def test_both_sides_default_the_retry_budget_and_breaker_alike():
    budget, library = model.RetryBudget(), RetryBudget()
    assert (budget.percent, budget.min_retries_per_second) == (
        library.percent, library.min_retries_per_second)
    breaker = model.CircuitBreaker()
    config = meshlib.contract.CircuitBreakerConfig()
    assert (breaker.consecutive_failures, breaker.open_duration, breaker.half_open_probes) == (
        config.consecutive_failures, config.open_duration, config.half_open_probes)
