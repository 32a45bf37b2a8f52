"""mTLS: who a Service's backends are, how strictly they take mTLS, and the TLS contexts.

* A Service's identities are SPIFFE IDs, one per service account its backends run as:
  annotation ``meshlib.dev/service-accounts: a,b`` (accounts in the Service's
  namespace), else ``meshlib.dev/service-account``, else the Service's name.
* Its effective mTLS mode is the first of its AccessPolicies' ``mtls.mode``, else the
  MeshConfig default.
* Clients get an ``UpstreamTlsContext`` on the Service's Clusters, servers a
  ``DownstreamTlsContext`` on their Listener's filter chain. Both take certificates from
  the certificate-provider instance ``meshlib`` of the node's bootstrap (gRFC A29,
  https://github.com/grpc/proposal/blob/master/A29-xds-tls-security.md): ``meshctl
  bootstrap --cert-dir`` writes it, and only nodes of a ``tls`` group get these
  contexts, since gRPC NACKs an instance name its bootstrap does not have.

Field choices, with grpcio 1.85 as the judge (``tests/e2e/test_native_mtls.py``):
``CommonTlsContext.tls_certificate_provider_instance`` for the identity and
``validation_context`` (a ``CertificateValidationContext``) holding
``ca_certificate_provider_instance`` and the SAN matchers in ``match_subject_alt_names``.
gRPC reads SANs from ``match_subject_alt_names`` only: it ignores
``match_typed_subject_alt_names``, so a typed matcher would silently accept any server
the CA signed. gRPC servers NACK SAN matchers in a ``DownstreamTlsContext``. (gRPC also
takes the deprecated ``combined_validation_context`` /
``*_certificate_provider_instance`` forms, which we do not use.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2

from meshlib.contract import SpiffeId
from xds_server.model import (
    SERVICE_ACCOUNTS_ANNOTATION,
    AccessPolicy,
    MeshModel,
    MtlsMode,
    RateLimit,
    Service,
)
from xds_server.translate._protos import pack

__all__ = [
    "CERT_PROVIDER_INSTANCE",
    "IDENTITY_CERT_NAME",
    "ROOT_CERT_NAME",
    "TLS_TRANSPORT_SOCKET",
    "InboundSecurity",
    "access_policies_by_service",
    "downstream_tls_socket",
    "effective_mtls_mode",
    "inbound_security",
    "merge_inbound",
    "service_identities",
    "service_inbound_security",
    "strictest_mode",
    "upstream_tls_socket",
]

#: The certificate-provider instance every TLS context names (the bootstrap's key).
CERT_PROVIDER_INSTANCE = "meshlib"
IDENTITY_CERT_NAME = "default"
ROOT_CERT_NAME = "ROOTCA"
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"

_STRICTNESS: dict[str, int] = {"DISABLE": 0, "PERMISSIVE": 1, "STRICT": 2}


def service_identities(model: MeshModel, service: Service) -> tuple[SpiffeId, ...]:
    """The SPIFFE IDs ``service``'s backends present, in annotation order.

    Example::

        >>> from xds_server.model import Service
        >>> svc = Service(name="reviews", namespace="shop", ports=())
        >>> [sid.uri for sid in service_identities(MeshModel(), svc)]
        ['spiffe://cluster.local/ns/shop/sa/reviews']
    """
    listed = [a.strip() for a in service.annotation(SERVICE_ACCOUNTS_ANNOTATION).split(",")]
    accounts = [a for a in listed if a] or [service.service_account or service.name]
    domain = model.mesh_config.trust_domain
    return tuple(SpiffeId(domain, service.namespace, a) for a in dict.fromkeys(accounts))


def effective_mtls_mode(model: MeshModel, service: Service,
                        policies: tuple[AccessPolicy, ...] | None = None) -> MtlsMode:
    """The first ``mtls.mode`` among ``service``'s AccessPolicies (``policies``, when
    the caller has them at hand), else the MeshConfig default."""
    if policies is None:
        policies = model.access_policies_for(service)
    for policy in policies:
        if policy.mtls_mode is not None:
            return policy.mtls_mode
    return model.mesh_config.default_mtls_mode


def strictest_mode(modes: Iterable[MtlsMode]) -> MtlsMode:
    """STRICT > PERMISSIVE > DISABLE; DISABLE for no modes at all."""
    return max(modes, key=_STRICTNESS.__getitem__, default="DISABLE")


def access_policies_by_service(model: MeshModel
                               ) -> dict[tuple[str, str], tuple[AccessPolicy, ...]]:
    """``model.access_policies_for`` for every Service at once: (namespace, name) → its
    AccessPolicies, in model order (one pass instead of one per Service)."""
    out: dict[tuple[str, str], list[AccessPolicy]] = {}
    for policy in model.access_policies:
        out.setdefault((policy.namespace, policy.target_ref.name), []).append(policy)
    return {key: tuple(policies) for key, policies in out.items()}


@dataclass(frozen=True, slots=True)
class InboundSecurity:
    """What a server Listener enforces, from the Services whose endpoints use its address.

    When several Services share an address (``reviews`` and ``reviews-v1`` list the
    same backends; any-address listeners serve every Service on their port), the
    strictest mode wins and all their AccessPolicies apply: their rules are merged, so
    a DENY of any one of them denies, and with ALLOW rules a caller must be allowed by
    one of them.
    """

    mode: MtlsMode
    policies: tuple[AccessPolicy, ...]
    trust_domain: str
    rate_limit: RateLimit | None = None  # TrafficPolicy rateLimit; the lowest rate wins
    tracing_sampling: float = 0.01  # MeshConfig tracing.sampling (0..1)
    access_logs: bool = False  # MeshConfig accessLogs.enabled


def inbound_security(model: MeshModel, services: Iterable[Service],
                     policies: Mapping[tuple[str, str], tuple[AccessPolicy, ...]] | None = None
                     ) -> InboundSecurity:
    """The :class:`InboundSecurity` of a listener serving ``services``; ``policies`` is
    :func:`access_policies_by_service` when the caller has it."""
    index = access_policies_by_service(model) if policies is None else policies
    return merge_inbound([service_inbound_security(model, s, index.get(s.key, ()))
                          for s in services])


def service_inbound_security(model: MeshModel, service: Service,
                             policies: tuple[AccessPolicy, ...]) -> InboundSecurity:
    """What ``service`` alone asks of its servers; ``policies`` are its AccessPolicies."""
    traffic = model.traffic_policy_for(service)
    mesh = model.mesh_config
    return InboundSecurity(effective_mtls_mode(model, service, policies), policies,
                           mesh.trust_domain,
                           traffic.rate_limit if traffic is not None else None,
                           mesh.tracing_sampling, mesh.access_logs)


def merge_inbound(parts: list[InboundSecurity]) -> InboundSecurity:
    """One listener's security from its Services': the strictest mode, every policy,
    the lowest rate limit."""
    if len(parts) == 1:
        return parts[0]
    limits = [p.rate_limit for p in parts if p.rate_limit is not None]
    return InboundSecurity(strictest_mode(p.mode for p in parts),
                           tuple(policy for p in parts for policy in p.policies),
                           parts[0].trust_domain if parts else "",
                           min(limits, key=lambda r: r.requests_per_second, default=None),
                           parts[0].tracing_sampling, parts[0].access_logs)


def upstream_tls_socket(identities: Iterable[SpiffeId]) -> base_pb2.TransportSocket:
    """A client's mTLS to a server that must present one of ``identities``.

    Each SPIFFE ID is one ``exact`` matcher in ``match_subject_alt_names`` (gRPC matches
    it against the server certificate's URI SANs; Envoy too, deprecated but honoured).
    """
    validation = _validation_context()
    validation.match_subject_alt_names.extend(
        string_pb2.StringMatcher(exact=sid.uri) for sid in identities)
    context = tls_pb2.UpstreamTlsContext(common_tls_context=_common_tls_context(validation))
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=pack(context))


def downstream_tls_socket(*, require_client_certificate: bool) -> base_pb2.TransportSocket:
    """A server's TLS, verifying client certificates against the mesh roots.

    ``require_client_certificate=False`` is PERMISSIVE for native gRPC servers: a gRPC
    server cannot take TLS and plaintext on one port, since it cannot tell them apart
    (gRFC A36, https://github.com/grpc/proposal/blob/master/A36-xds-for-servers.md:
    ``listener_filters`` such as a TLS inspector are NACKed and ``transport_protocol``
    only ever matches ``raw_buffer``). So PERMISSIVE means TLS with an *optional* client
    certificate: callers with a mesh certificate get an identity, callers without one
    are served without, and plaintext callers cannot connect.
    """
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=_common_tls_context(_validation_context()),
        require_client_certificate=wrappers_pb2.BoolValue(value=require_client_certificate),
    )
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=pack(context))


def _provider(cert_name: str) -> common_pb2.CertificateProviderPluginInstance:
    return common_pb2.CertificateProviderPluginInstance(instance_name=CERT_PROVIDER_INSTANCE,
                                                       certificate_name=cert_name)


def _validation_context() -> common_pb2.CertificateValidationContext:
    return common_pb2.CertificateValidationContext(
        ca_certificate_provider_instance=_provider(ROOT_CERT_NAME))


def _common_tls_context(validation: common_pb2.CertificateValidationContext
                        ) -> tls_pb2.CommonTlsContext:
    return tls_pb2.CommonTlsContext(
        tls_certificate_provider_instance=_provider(IDENTITY_CERT_NAME),
        validation_context=validation,
    )
