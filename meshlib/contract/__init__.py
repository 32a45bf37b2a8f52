"""What both sides of the wire must agree on: meshlib (the library) and its control
plane (``xds_server``) each import this package, and nothing else of each other.

Only what the two sides must agree on belongs here — a value one side writes and
the other reads, or a check both make — each defined once:

* :mod:`~meshlib.contract.errors` — the root of the error hierarchy
  (:class:`MeshError`), :class:`Problem`, :class:`ConfigError`, :class:`XdsError`,
  :class:`InconsistentSnapshotError`, :class:`CertificateError`, :class:`BindError`;
* :mod:`~meshlib.contract.listen` — how every server of the mesh listens: never on a
  port another process serves (:data:`NO_REUSEPORT`, :func:`check_free`);
* :mod:`~meshlib.contract.spiffe` — workload identities (:class:`SpiffeId`) and
  :data:`DEFAULT_TRUST_DOMAIN`;
* :mod:`~meshlib.contract.resources` — xDS type URLs and their short names;
* :mod:`~meshlib.contract.names` — Listener and Cluster names (built by one side,
  parsed by the other) and the certificate directory's file names;
* :mod:`~meshlib.contract.node` — ``Node`` metadata keys and node kinds;
* :mod:`~meshlib.contract.defaults` — defaults that must match (retry budget,
  circuit breaker, limits, tracing sampling, namespace, mTLS modes);
* :mod:`~meshlib.contract.cluster_metadata` — the ``meshlib.dev`` Cluster metadata
  schema, one :func:`~meshlib.contract.cluster_metadata.encode` /
  :func:`~meshlib.contract.cluster_metadata.decode` pair.

Three modules are not re-exported, because importing them costs: import them by name.

* :mod:`meshlib.contract.ca` — the certificate service's protobuf messages;
* :mod:`meshlib.contract.x509` — the SPIFFE ID of a certificate or CSR
  (``cryptography``);
* :mod:`meshlib.contract.regex` — patterns from config or xDS: RE2 syntax checked by
  the control plane, RE2 matching in meshlib, :data:`MAX_MATCH_LENGTH` (``google-re2``).

Rules: this package imports nothing else from meshlib (an import-linter contract
checks it), and ``import meshlib.contract`` loads neither grpc, protobuf nor
cryptography.

Example::

    from meshlib.contract import CLUSTER, SpiffeId, short_name

    SpiffeId.parse("spiffe://cluster.local/ns/default/sa/frontend").service_account
    short_name(CLUSTER)  # "CDS"
"""

from meshlib.contract.cluster_metadata import (
    MESHLIB_METADATA,
    CircuitBreakerConfig,
    ClusterMetadata,
    RetryBudgetConfig,
)
from meshlib.contract.defaults import (
    DEFAULT_BREAKER_FAILURES,
    DEFAULT_BREAKER_HALF_OPEN_PROBES,
    DEFAULT_BREAKER_OPEN_DURATION,
    DEFAULT_MAX_REQUESTS,
    DEFAULT_MIN_RETRIES_PER_SECOND,
    DEFAULT_MTLS_MODE,
    DEFAULT_NAMESPACE,
    DEFAULT_RETRY_BUDGET_PERCENT,
    DEFAULT_RETRY_BUDGET_WINDOW,
    DEFAULT_TRACING_SAMPLING,
    MTLS_MODES,
    MtlsMode,
)
from meshlib.contract.errors import (
    BindError,
    CertificateError,
    ConfigError,
    InconsistentSnapshotError,
    MeshError,
    Problem,
    XdsError,
)
from meshlib.contract.listen import NO_REUSEPORT, check_free
from meshlib.contract.names import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    SERVER_LISTENER_TEMPLATE,
    outbound_cluster_name,
    server_listener_name,
    service_of,
)
from meshlib.contract.node import (
    ENVOY_NODE,
    GRPC_NODE,
    KIND_METADATA_KEY,
    MESHLIB_NODE,
    NAMESPACE_METADATA_KEY,
    NODE_KINDS,
    OUTBOUND_PORT_METADATA_KEY,
    PEER_IDENTITY_METADATA_KEY,
    TLS_METADATA_KEY,
    NodeKind,
)
from meshlib.contract.resources import (
    CLUSTER,
    ENDPOINT,
    FULL_STATE_TYPES,
    LISTENER,
    ROUTE,
    SECRET,
    TYPE_URL_PREFIX,
    short_name,
)
from meshlib.contract.spiffe import DEFAULT_TRUST_DOMAIN, SpiffeId, one_spiffe_uri

__all__ = [
    "CA_FILE",
    "CERT_FILE",
    "CLUSTER",
    "DEFAULT_BREAKER_FAILURES",
    "DEFAULT_BREAKER_HALF_OPEN_PROBES",
    "DEFAULT_BREAKER_OPEN_DURATION",
    "DEFAULT_MAX_REQUESTS",
    "DEFAULT_MIN_RETRIES_PER_SECOND",
    "DEFAULT_MTLS_MODE",
    "DEFAULT_NAMESPACE",
    "DEFAULT_RETRY_BUDGET_PERCENT",
    "DEFAULT_RETRY_BUDGET_WINDOW",
    "DEFAULT_TRACING_SAMPLING",
    "DEFAULT_TRUST_DOMAIN",
    "ENDPOINT",
    "ENVOY_NODE",
    "FULL_STATE_TYPES",
    "GRPC_NODE",
    "KEY_FILE",
    "KIND_METADATA_KEY",
    "LISTENER",
    "MESHLIB_METADATA",
    "MESHLIB_NODE",
    "MTLS_MODES",
    "NAMESPACE_METADATA_KEY",
    "NODE_KINDS",
    "NO_REUSEPORT",
    "OUTBOUND_PORT_METADATA_KEY",
    "PEER_IDENTITY_METADATA_KEY",
    "ROUTE",
    "SECRET",
    "SERVER_LISTENER_TEMPLATE",
    "TLS_METADATA_KEY",
    "TYPE_URL_PREFIX",
    "BindError",
    "CertificateError",
    "CircuitBreakerConfig",
    "ClusterMetadata",
    "ConfigError",
    "InconsistentSnapshotError",
    "MeshError",
    "MtlsMode",
    "NodeKind",
    "Problem",
    "RetryBudgetConfig",
    "SpiffeId",
    "XdsError",
    "check_free",
    "one_spiffe_uri",
    "outbound_cluster_name",
    "server_listener_name",
    "service_of",
    "short_name",
]
