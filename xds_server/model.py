"""The mesh model: typed, validated, immutable.

Sources (files, the Kubernetes API) build a :class:`MeshModel`; translation turns it
into xDS resources. Nothing here does I/O. Every object keeps the Kubernetes shape
it came from (Service, EndpointSlice, GRPCRoute, HTTPRoute and the ``meshlib.dev``
kinds), normalised just enough that translation never has to re-parse strings:
durations are ``float`` seconds, enums are upper-case strings, defaults are applied.

All collections are tuples and all classes are frozen, so a model can be shared
between threads and compared with ``==`` to decide whether anything changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from meshlib.contract import (
    DEFAULT_BREAKER_FAILURES,
    DEFAULT_BREAKER_HALF_OPEN_PROBES,
    DEFAULT_BREAKER_OPEN_DURATION,
    DEFAULT_MAX_REQUESTS,
    DEFAULT_MIN_RETRIES_PER_SECOND,
    DEFAULT_MTLS_MODE,
    DEFAULT_NAMESPACE,
    DEFAULT_RETRY_BUDGET_PERCENT,
    DEFAULT_TRACING_SAMPLING,
    DEFAULT_TRUST_DOMAIN,
    MtlsMode,
)

__all__ = [
    "DEFAULT_CLUSTER_DOMAIN",
    "DEFAULT_NAMESPACE",
    "DEFAULT_TRUST_DOMAIN",
    "MESH_ANNOTATION_PREFIX",
    "SERVICE_ACCOUNTS_ANNOTATION",
    "AccessPolicy",
    "AccessRule",
    "BackendRef",
    "CircuitBreaker",
    "Endpoint",
    "EndpointPort",
    "EndpointSlice",
    "FaultInjection",
    "HeaderMatch",
    "LoadBalancer",
    "MeshConfig",
    "MeshModel",
    "ObjectRef",
    "OutlierDetection",
    "ParentRef",
    "PathMatch",
    "RateLimit",
    "RetryBudget",
    "RetryPolicy",
    "Route",
    "RouteMatch",
    "RouteRule",
    "Service",
    "ServicePort",
    "TargetRef",
    "TrafficPolicy",
]

DEFAULT_CLUSTER_DOMAIN = "cluster.local"
MESH_ANNOTATION_PREFIX = "meshlib.dev/"
#: Comma-separated service accounts (in the Service's namespace) its backends run as.
SERVICE_ACCOUNTS_ANNOTATION = "meshlib.dev/service-accounts"

Protocol = Literal["grpc", "http", "http2", "tcp"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectRef:
    """Where an object came from, for error messages: ``kind ns/name`` and the file."""

    kind: str
    namespace: str
    name: str
    source: str = ""  # file path (file source) or "kubernetes"

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.kind} {self.namespace}/{self.name}"


# --------------------------------------------------------------------------- Service


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicePort:
    """One ``spec.ports[]`` entry of a ``v1/Service``.

    ``protocol`` is derived as Kubernetes tooling does: ``appProtocol`` first
    (``grpc``, ``http``, ``http2``, ``tcp``, also ``kubernetes.io/h2c``), then the
    port name prefix (``grpc-web`` → grpc, ``http2-x`` → http2, ...), else ``tcp``.
    """

    name: str  # "" when the Service has a single unnamed port
    port: int
    target_port: int | str  # number, or a container port name
    protocol: Protocol = "tcp"
    app_protocol: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    """A ``v1/Service``."""

    name: str
    namespace: str
    ports: tuple[ServicePort, ...]
    labels: tuple[tuple[str, str], ...] = ()
    service_account: str = ""  # annotation meshlib.dev/service-account, for identities
    # The ``meshlib.dev/`` annotations, sorted (others, such as kubectl's
    # last-applied-configuration, are not the mesh's and would only look like changes).
    annotations: tuple[tuple[str, str], ...] = ()
    ref: ObjectRef | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def annotation(self, key: str) -> str:
        """The value of annotation ``key`` ("" when absent)."""
        return next((v for k, v in self.annotations if k == key), "")

    def fqdn(self, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> str:
        return f"{self.name}.{self.namespace}.svc.{cluster_domain}"

    @property
    def distinct_ports(self) -> tuple[ServicePort, ...]:
        """One port per number (the first): ``53/UDP`` and ``53/TCP`` are one xDS port."""
        seen: dict[int, ServicePort] = {}
        for p in self.ports:
            seen.setdefault(p.port, p)
        return tuple(seen.values())

    def port_by_number(self, port: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == port), None)


# --------------------------------------------------------------------- EndpointSlice


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointPort:
    """``ports[]`` of an EndpointSlice; ``name`` links it to the Service port."""

    name: str
    port: int
    protocol: str = "TCP"
    app_protocol: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """``endpoints[]`` of an EndpointSlice.

    ``ready`` follows Kubernetes: an absent ``conditions.ready`` means ready.
    ``serving``/``terminating`` are kept so a terminating-but-serving endpoint can
    be drained rather than dropped.
    """

    addresses: tuple[str, ...]
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    zone: str = ""
    node_name: str = ""
    hostname: str = ""
    target_pod: str = ""  # targetRef.name when kind is Pod


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointSlice:
    """A ``discovery.k8s.io/v1`` EndpointSlice, owned by ``service_name``."""

    name: str
    namespace: str
    service_name: str  # label kubernetes.io/service-name
    address_type: str = "IPv4"
    ports: tuple[EndpointPort, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    ref: ObjectRef | None = field(default=None, compare=False)


# ----------------------------------------------------------------- GRPCRoute/HTTPRoute


@dataclass(frozen=True, slots=True, kw_only=True)
class ParentRef:
    """A GAMMA parent: ``{group: "", kind: Service, name, namespace?, port?}``."""

    name: str
    namespace: str
    kind: str = "Service"
    group: str = ""
    port: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PathMatch:
    """``Exact`` | ``PathPrefix`` | ``RegularExpression`` on the request path.

    A GRPCRoute method match is normalised to a path match:
    service+method Exact → ``Exact /pkg.Svc/Method``; service only → ``PathPrefix
    /pkg.Svc/``; method only or RegularExpression → ``RegularExpression``.
    """

    type: Literal["Exact", "PathPrefix", "RegularExpression"]
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderMatch:
    """``Exact`` | ``RegularExpression`` on one header (gRPC metadata key)."""

    name: str  # lower-cased
    value: str
    type: Literal["Exact", "RegularExpression"] = "Exact"


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteMatch:
    """One ``matches[]`` entry; all present conditions must hold (AND)."""

    path: PathMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()
    method: str | None = None  # HTTPRoute only: GET, POST, ...
    query_params: tuple[HeaderMatch, ...] = ()  # HTTPRoute only


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendRef:
    """A weighted ``backendRefs[]`` entry naming a Service (and port)."""

    name: str
    namespace: str
    port: int | None = None
    weight: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRule:
    """``rules[]``: matches (OR) → weighted backends.

    An empty ``matches`` matches everything (Gateway API: defaults to prefix ``/``).
    An empty ``backend_refs`` means requests are answered with an error (gRPC
    UNAVAILABLE / HTTP 500), as the Gateway API specifies.
    """

    matches: tuple[RouteMatch, ...] = ()
    backend_refs: tuple[BackendRef, ...] = ()
    timeout: float | None = None  # HTTPRoute timeouts.request, seconds
    backend_request_timeout: float | None = None  # timeouts.backendRequest
    name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """A ``GRPCRoute`` or ``HTTPRoute`` attached to Services (GAMMA)."""

    kind: Literal["GRPCRoute", "HTTPRoute"]
    name: str
    namespace: str
    parent_refs: tuple[ParentRef, ...]
    rules: tuple[RouteRule, ...]
    hostnames: tuple[str, ...] = ()
    ref: ObjectRef | None = field(default=None, compare=False)


# ------------------------------------------------------------------- meshlib.dev kinds


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetRef:
    """The Service a policy applies to (``{group: "", kind: Service, name}``)."""

    name: str
    kind: str = "Service"
    group: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadBalancer:
    """``spec.loadBalancer``. ``hash_header`` is required for RING_HASH."""

    type: Literal["ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH"] = "ROUND_ROBIN"
    hash_header: str = ""
    choice_count: int = 2  # LEAST_REQUEST
    minimum_ring_size: int = 1024  # RING_HASH
    maximum_ring_size: int = 8_388_608


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudget:
    """Retries allowed as a share of active requests, with a floor per second."""

    percent: float = DEFAULT_RETRY_BUDGET_PERCENT
    min_retries_per_second: float = DEFAULT_MIN_RETRIES_PER_SECOND


DEFAULT_RETRY_ON = ("UNAVAILABLE",)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """``spec.retries``. ``attempts`` counts the first try (3 = 1 try + 2 retries).

    ``retry_on`` holds gRPC status code names (``UNAVAILABLE``, ``CANCELLED``,
    ``DEADLINE_EXCEEDED``, ``INTERNAL``, ``RESOURCE_EXHAUSTED``); the safe default
    is ``UNAVAILABLE`` only.
    """

    attempts: int = 3
    per_try_timeout: float | None = None
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON
    base_interval: float = 0.025
    max_interval: float = 0.25
    budget: RetryBudget = field(default_factory=RetryBudget)


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitBreaker:
    """``spec.circuitBreaker``: per-endpoint breaker plus a per-cluster cap."""

    consecutive_failures: int = DEFAULT_BREAKER_FAILURES
    open_duration: float = DEFAULT_BREAKER_OPEN_DURATION
    half_open_probes: int = DEFAULT_BREAKER_HALF_OPEN_PROBES
    max_concurrent_requests: int = DEFAULT_MAX_REQUESTS


@dataclass(frozen=True, slots=True, kw_only=True)
class OutlierDetection:
    """``spec.outlierDetection`` (xDS OutlierDetection, gRFC A50).

    ``consecutive_failures`` is honoured by meshlib and Envoy (``consecutive_5xx``);
    gRPC's native client implements only the failure-percentage algorithm, enabled
    when ``failure_percentage_threshold`` is set.
    """

    consecutive_failures: int = 5
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 10
    failure_percentage_threshold: int | None = None
    failure_percentage_minimum_hosts: int = 5
    failure_percentage_request_volume: int = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """``spec.rateLimit``: a local token bucket on the server side."""

    requests_per_second: float
    burst: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultInjection:
    """``spec.faultInjection``: delay and/or abort a percentage of requests."""

    delay_percent: float = 0.0
    delay: float = 0.0
    abort_percent: float = 0.0
    abort_grpc_status: str = "UNAVAILABLE"
    abort_http_status: int = 503


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficPolicy:
    """``meshlib.dev/v1alpha1 TrafficPolicy``: how clients call the target Service."""

    name: str
    namespace: str
    target_ref: TargetRef
    load_balancer: LoadBalancer | None = None
    timeout: float | None = None
    retries: RetryPolicy | None = None
    circuit_breaker: CircuitBreaker | None = None
    outlier_detection: OutlierDetection | None = None
    rate_limit: RateLimit | None = None
    fault_injection: FaultInjection | None = None
    ref: ObjectRef | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessRule:
    """One ALLOW or DENY rule: ``from`` identities → ``to`` methods/paths.

    Empty ``from_*`` tuples match any caller; empty ``to_*`` match any method.
    Method patterns are ``/pkg.Svc/Method`` with ``*`` wildcards.
    """

    action: Literal["ALLOW", "DENY"]
    from_identities: tuple[str, ...] = ()  # SPIFFE IDs, "*" wildcards allowed
    from_service_accounts: tuple[str, ...] = ()  # "ns/sa" or "sa" (policy's namespace)
    from_namespaces: tuple[str, ...] = ()
    to_methods: tuple[str, ...] = ()
    to_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessPolicy:
    """``meshlib.dev/v1alpha1 AccessPolicy``: mTLS mode and authorization."""

    name: str
    namespace: str
    target_ref: TargetRef
    mtls_mode: MtlsMode | None = None  # None: MeshConfig's default
    rules: tuple[AccessRule, ...] = ()
    ref: ObjectRef | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshConfig:
    """``meshlib.dev/v1alpha1 MeshConfig``: at most one per mesh."""

    name: str = "mesh"
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    default_mtls_mode: MtlsMode = DEFAULT_MTLS_MODE
    certificate_ttl: float = 24 * 3600.0
    tracing_sampling: float = DEFAULT_TRACING_SAMPLING
    access_logs: bool = False
    sidecar_outbound_port: int = 15001  # Envoy's outbound listener
    ref: ObjectRef | None = field(default=None, compare=False)


# ------------------------------------------------------------------------ MeshModel


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshModel:
    """Everything the control plane knows, sorted so equal inputs give equal models.

    Example::

        model = load_model("examples/mesh")           # xds_server.sources
        svc = model.service("default", "reviews")
        eps = model.endpoint_slices_for(svc)
    """

    services: tuple[Service, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    routes: tuple[Route, ...] = ()
    traffic_policies: tuple[TrafficPolicy, ...] = ()
    access_policies: tuple[AccessPolicy, ...] = ()
    mesh_config: MeshConfig = field(default_factory=MeshConfig)
    _indexes: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def service(self, namespace: str, name: str) -> Service | None:
        return self._services_by_key().get((namespace, name))

    def endpoint_slices_for(self, service: Service) -> tuple[EndpointSlice, ...]:
        return self._slices_by_service().get(service.key, ())

    def routes_for(self, service: Service) -> tuple[Route, ...]:
        """Routes with a parentRef naming ``service`` (GAMMA attachment)."""
        return self._routes_by_parent().get(service.key, ())

    def traffic_policy_for(self, service: Service) -> TrafficPolicy | None:
        return self._policies_by_target().get(service.key)

    def access_policies_for(self, service: Service) -> tuple[AccessPolicy, ...]:
        return tuple(
            p
            for p in self.access_policies
            if p.namespace == service.namespace and p.target_ref.name == service.name
        )

    # Indexes are computed once per model, on first use; the model is immutable, so
    # caching them in a private, non-compared dict on the instance is safe.
    def _index(self, name: str, build):  # type: ignore[no-untyped-def]
        if name not in self._indexes:
            self._indexes[name] = build()
        return self._indexes[name]

    def _services_by_key(self) -> dict[tuple[str, str], Service]:
        return self._index("svc", lambda: {s.key: s for s in self.services})

    def _slices_by_service(self) -> dict[tuple[str, str], tuple[EndpointSlice, ...]]:
        def build() -> dict[tuple[str, str], tuple[EndpointSlice, ...]]:
            out: dict[tuple[str, str], list[EndpointSlice]] = {}
            for s in self.endpoint_slices:
                out.setdefault((s.namespace, s.service_name), []).append(s)
            return {k: tuple(v) for k, v in out.items()}

        return self._index("eps", build)

    def _routes_by_parent(self) -> dict[tuple[str, str], tuple[Route, ...]]:
        def build() -> dict[tuple[str, str], tuple[Route, ...]]:
            out: dict[tuple[str, str], list[Route]] = {}
            for r in self.routes:
                for p in r.parent_refs:
                    if p.kind == "Service":
                        bucket = out.setdefault((p.namespace, p.name), [])
                        if r not in bucket:
                            bucket.append(r)
            return {k: tuple(v) for k, v in out.items()}

        return self._index("routes", build)

    def _policies_by_target(self) -> dict[tuple[str, str], TrafficPolicy]:
        return self._index(
            "tp", lambda: {(p.namespace, p.target_ref.name): p for p in self.traffic_policies}
        )

