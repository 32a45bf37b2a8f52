"""SPIFFE IDs: ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``.

The workload identity of the mesh (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md),
in the Kubernetes form Istio and Linkerd use. Parsing is strict: a lower-case trust
domain, no query, fragment, port or user info, and namespace and service account each
a DNS-1123 label (``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, at most 63 characters), so the
ID maps one-to-one onto its DNS form (:attr:`SpiffeId.dns_name`): no dots to make
``shop/api.payments`` and ``payments.shop/api`` the same name, no upper case to make
``Cart`` and ``cart`` the same.

Example::

    sid = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/frontend")
    sid.namespace, sid.service_account      # ("default", "frontend")
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DEFAULT_TRUST_DOMAIN", "SEGMENT_PATTERN", "SpiffeId", "one_spiffe_uri"]

DEFAULT_TRUST_DOMAIN = "cluster.local"
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
# A DNS-1123 label: what a namespace or service account may be in a SPIFFE ID.
SEGMENT_PATTERN = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A mesh workload identity: trust domain, namespace, service account."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.match(self.trust_domain):
            raise ValueError(f"invalid SPIFFE trust domain {self.trust_domain!r}: use "
                             "lower-case letters, digits, '.', '-' and '_'")
        for what, value in (("namespace", self.namespace),
                            ("service account", self.service_account)):
            if not isinstance(value, str) or not SEGMENT_PATTERN.fullmatch(value):
                raise ValueError(
                    f"invalid {what} {value!r} in a SPIFFE ID: must be a DNS-1123 label "
                    "(lower-case letters, digits and '-', starting and ending with a "
                    "letter or digit, at most 63 characters)")

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """``spiffe://td/ns/NS/sa/SA`` → SpiffeId; ValueError naming what is wrong."""
        if not text.startswith("spiffe://"):
            raise ValueError(f"not a SPIFFE ID (must start with spiffe://): {text!r}")
        rest = text[len("spiffe://"):]
        if any(c in rest for c in "?#@:"):
            raise ValueError(f"a SPIFFE ID has no port, user, query or fragment: {text!r}")
        trust_domain, _, path = rest.partition("/")
        parts = path.split("/")
        if len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
            raise ValueError(f"expected spiffe://<trust-domain>/ns/<namespace>/sa/"
                             f"<service-account>, got {text!r}")
        return cls(trust_domain, parts[1], parts[3])

    @property
    def uri(self) -> str:
        """The ID as the URI SAN of a certificate."""
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def dns_name(self) -> str:
        """The identity as a DNS name, ``<sa>.<ns>.serviceaccount.identity.<trust-domain>``
        (Linkerd's form).

        Certificates carry it as a DNS SAN beside the SPIFFE URI SAN, so gRPC's own
        hostname check (``grpc.ssl_target_name_override``) verifies a peer's identity
        in C, during the handshake. The mapping is one-to-one: both segments are
        lower-case DNS labels (no dots).
        """
        return (f"{self.service_account}.{self.namespace}.serviceaccount.identity."
                f"{self.trust_domain}")

    def __str__(self) -> str:
        return self.uri


def one_spiffe_uri(names: Iterable[bytes]) -> str | None:
    """The one ``spiffe://`` URI among a verified certificate's subject alternative
    names as gRPC reports them (``peer_identities()``, the auth context's
    ``x509_subject_alternative_name``), like gRPC's ``peer_spiffe_id``: None if there is
    none, or several (a certificate with two SPIFFE IDs names nobody)."""
    found = None
    for value in names:
        if value.startswith(b"spiffe://"):
            if found is not None:
                return None
            found = value
    return found.decode("ascii", "replace") if found is not None else None
