"""Parse object metadata, ``v1/Service`` and ``discovery.k8s.io/v1/EndpointSlice``.

Pure functions over plain dicts in the Kubernetes JSON shape (camelCase), as
``kubectl get -o json`` or the API server gives them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xds_server.model import (
    DEFAULT_NAMESPACE,
    MESH_ANNOTATION_PREFIX,
    SERVICE_ACCOUNTS_ANNOTATION,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    ObjectRef,
    Protocol,
    Service,
    ServicePort,
)
from xds_server.sources.fields import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    Check,
    Fields,
    ObjectContext,
    one_of,
    pattern,
    quote,
)

__all__ = [
    "ENDPOINT_SLICE_FIELDS",
    "METADATA_FIELDS",
    "OBJECT_FIELDS",
    "SERVICE_ACCOUNTS_ANNOTATION",
    "SERVICE_ACCOUNT_ANNOTATION",
    "SERVICE_NAME_LABEL",
    "Metadata",
    "derive_protocol",
    "object_label",
    "parse_endpoint_slice",
    "parse_metadata",
    "parse_service",
]

SERVICE_ACCOUNT_ANNOTATION = "meshlib.dev/service-account"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

METADATA_FIELDS = frozenset(
    {
        "name",
        "namespace",
        "labels",
        "annotations",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "ownerReferences",
        "managedFields",
        "finalizers",
        "generateName",
        "selfLink",
    }
)

#: Top-level fields of an object with a spec; ``status`` is accepted and ignored.
OBJECT_FIELDS = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})

# Every field of a v1 ServiceSpec: accepted; only ``ports`` matters to the mesh.
_SERVICE_SPEC_FIELDS = frozenset(
    {
        "allocateLoadBalancerNodePorts",
        "clusterIP",
        "clusterIPs",
        "externalIPs",
        "externalName",
        "externalTrafficPolicy",
        "healthCheckNodePort",
        "internalTrafficPolicy",
        "ipFamilies",
        "ipFamilyPolicy",
        "loadBalancerClass",
        "loadBalancerIP",
        "loadBalancerSourceRanges",
        "ports",
        "publishNotReadyAddresses",
        "selector",
        "sessionAffinity",
        "sessionAffinityConfig",
        "trafficDistribution",
        "type",
    }
)
_SERVICE_PORT_FIELDS = frozenset(
    {"name", "port", "targetPort", "protocol", "appProtocol", "nodePort"}
)
ENDPOINT_SLICE_FIELDS = frozenset(
    {"apiVersion", "kind", "metadata", "addressType", "endpoints", "ports"}
)
_ENDPOINT_PORT_FIELDS = frozenset({"name", "port", "protocol", "appProtocol"})
_ENDPOINT_FIELDS = frozenset(
    {
        "addresses",
        "conditions",
        "hostname",
        "targetRef",
        "nodeName",
        "zone",
        "hints",
        "deprecatedTopology",
    }
)
_CONDITION_FIELDS = frozenset({"ready", "serving", "terminating"})
_OBJECT_REFERENCE_FIELDS = frozenset(
    {"apiVersion", "kind", "name", "namespace", "uid", "resourceVersion", "fieldPath"}
)
_HINTS_FIELDS = frozenset({"forZones", "forNodes"})

_L4_PROTOCOLS = ("TCP", "UDP", "SCTP")
_ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
# IANA_SVC_NAME: a container port name, at most 15 characters with a letter.
_PORT_NAME = re.compile(r"(?=.*[a-z])[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?")

# appProtocol values we understand (lower-cased); anything else falls back to the name.
_APP_PROTOCOLS: dict[str, Protocol] = {
    "grpc": "grpc",
    "grpc-web": "grpc",
    "http": "http",
    "http2": "http2",
    "tcp": "tcp",
    "kubernetes.io/h2c": "http2",
    "kubernetes.io/ws": "http",
    "kubernetes.io/wss": "tcp",
}
# Istio's port-name convention: ``<protocol>[-<suffix>]``, longest prefix first.
_NAME_PREFIXES: tuple[tuple[str, Protocol], ...] = (
    ("grpc-web", "grpc"),
    ("http2", "http2"),
    ("grpc", "grpc"),
    ("http", "http"),
    ("tcp", "tcp"),
)


def derive_protocol(name: str, app_protocol: str = "") -> Protocol:
    """The mesh protocol of a Service port, as Istio derives it.

    ``appProtocol`` first (``grpc``, ``http``, ``http2``, ``tcp``,
    ``kubernetes.io/h2c`` → http2, ``kubernetes.io/ws`` → http), then the port name
    prefix (``grpc``, ``grpc-web``, ``http``, ``http2``, ``tcp``, followed by ``-`` or
    the end of the name), else ``tcp``.

    >>> derive_protocol("http2-api"), derive_protocol("web", "kubernetes.io/h2c")
    ('http2', 'http2')
    """
    known = _APP_PROTOCOLS.get(app_protocol.lower())
    if known:
        return known
    lowered = name.lower()
    for prefix, protocol in _NAME_PREFIXES:
        if lowered == prefix or lowered.startswith(prefix + "-"):
            return protocol
    return "tcp"


@dataclass(frozen=True, slots=True, kw_only=True)
class Metadata:
    """The parts of ``metadata`` the mesh uses."""

    name: str
    namespace: str
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    creation_timestamp: str = ""  # RFC 3339, "" when absent; orders policy conflicts

    def annotation(self, key: str) -> str:
        """The value of annotation ``key`` ("" when absent)."""
        return dict(self.annotations).get(key, "")

    def label(self, key: str) -> str:
        """The value of label ``key`` ("" when absent)."""
        return dict(self.labels).get(key, "")


def object_label(kind: str, metadata: Any, *, namespaced: bool = True) -> tuple[str, str, str]:
    """``(namespace, name, "Kind namespace/name")`` from raw metadata, for messages.

    Cluster-scoped objects read ``"Kind name"``. Tolerates any junk in ``metadata``.
    """
    meta = metadata if isinstance(metadata, Mapping) else {}
    name = meta.get("name")
    name = name if isinstance(name, str) and name else "<no name>"
    if not namespaced:
        return "", name, f"{kind} {name}"
    namespace = meta.get("namespace")
    namespace = namespace if isinstance(namespace, str) and namespace else DEFAULT_NAMESPACE
    return namespace, name, f"{kind} {namespace}/{name}"


def parse_metadata(
    ctx: ObjectContext, obj: Fields, *, namespaced: bool = True, dns_label: bool = False
) -> Metadata:
    """``metadata``: name (required), namespace (default ``default``), labels, annotations.

    ``dns_label``: the name must be an RFC 1035 label (Services), else a DNS subdomain.
    Cluster-scoped objects ignore ``namespace``, as the API server does.
    """
    meta = obj.child("metadata", METADATA_FIELDS, required=True)
    if meta is None:
        return Metadata(name="", namespace="" if not namespaced else DEFAULT_NAMESPACE)
    if dns_label:
        name_check = pattern(
            r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?",
            "a DNS label (lower-case letters, digits and '-', starting with a letter)",
        )
    else:
        name_check = pattern(
            DNS_SUBDOMAIN, "a DNS subdomain (lower-case letters, digits, '-' and '.')"
        )
    name = meta.string("name", required=True, check=name_check)
    namespace = ""
    if namespaced:
        namespace = (
            meta.string("namespace", DEFAULT_NAMESPACE, check=pattern(DNS_LABEL, "a DNS label"))
            or DEFAULT_NAMESPACE
        )
    created = meta.raw("creationTimestamp")
    if isinstance(created, dt.datetime):  # YAML parses unquoted timestamps
        if created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)
        created = created.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Metadata(
        name=name,
        namespace=namespace,
        labels=tuple(sorted(meta.string_map("labels").items())),
        annotations=tuple(sorted(meta.string_map("annotations").items())),
        creation_timestamp=created if isinstance(created, str) else "",
    )


def _ref(kind: str, meta: Metadata, ctx: ObjectContext) -> ObjectRef:
    return ObjectRef(kind=kind, namespace=meta.namespace, name=meta.name, source=ctx.source)


# ---------------------------------------------------------------------------- Service


def parse_service(ctx: ObjectContext, obj: Fields, meta: Metadata) -> Service:
    """A ``v1/Service``: its ports (protocol derived), the service-account annotations
    and the other ``meshlib.dev/`` annotations."""
    account = meta.annotation(SERVICE_ACCOUNT_ANNOTATION)
    if account and not DNS_LABEL.fullmatch(account):
        ctx.error(
            f"metadata.annotations[{SERVICE_ACCOUNT_ANNOTATION}]",
            "must be a service account name in a SPIFFE ID (a DNS label: lower-case "
            f"letters, digits and '-'), got {quote(account)}",
        )
    accounts = meta.annotation(SERVICE_ACCOUNTS_ANNOTATION)
    for name in accounts.split(",") if accounts else ():
        if not DNS_LABEL.fullmatch(name.strip()):
            ctx.error(
                f"metadata.annotations[{SERVICE_ACCOUNTS_ANNOTATION}]",
                "must be comma-separated service account names (DNS labels: lower-case "
                f"letters, digits and '-'), got {quote(accounts)}",
            )
            break
    spec = obj.child("spec", _SERVICE_SPEC_FIELDS)
    ports = _service_ports(spec) if spec else ()
    return Service(
        name=meta.name,
        namespace=meta.namespace,
        ports=ports,
        labels=meta.labels,
        service_account=account,
        annotations=tuple(
            (k, v) for k, v in meta.annotations if k.startswith(MESH_ANNOTATION_PREFIX)),
        ref=_ref("Service", meta, ctx),
    )


def _service_ports(spec: Fields) -> tuple[ServicePort, ...]:
    ports: list[ServicePort] = []
    entries = spec.children("ports", _SERVICE_PORT_FIELDS)
    names: set[str] = set()
    numbers: set[tuple[int, str]] = set()
    for entry in entries:
        name = entry.string("name", check=pattern(DNS_LABEL, "a DNS label"))
        if len(entries) > 1 and not entry.has("name"):
            entry.error("name", "is required when a Service has more than one port")
        elif name and name in names:
            entry.error("name", f"duplicate port name {quote(name)}")
        names.add(name)
        number = entry.integer("port", 0, required=True, minimum=1, maximum=65535)
        l4 = entry.string("protocol", "TCP", check=one_of(_L4_PROTOCOLS))
        if number and (number, l4) in numbers:
            entry.error("port", f"duplicate port {number}/{l4}")
        numbers.add((number, l4))
        target = _target_port(entry, number)
        entry.integer("nodePort", None, minimum=1, maximum=65535)
        app_protocol = entry.string("appProtocol")
        ports.append(
            ServicePort(
                name=name,
                port=number,
                target_port=target,
                protocol=derive_protocol(name, app_protocol),
                app_protocol=app_protocol,
            )
        )
    return tuple(ports)


def _target_port(entry: Fields, default: int) -> int | str:
    value = entry.raw("targetPort")
    if value is None:
        return default
    if isinstance(value, str):
        return entry.string(
            "targetPort",
            default,
            check=pattern(_PORT_NAME, "a port number or a container port name"),
        )
    return entry.integer("targetPort", default, minimum=1, maximum=65535)


# ---------------------------------------------------------------------- EndpointSlice


def parse_endpoint_slice(ctx: ObjectContext, obj: Fields, meta: Metadata) -> EndpointSlice:
    """A ``discovery.k8s.io/v1`` EndpointSlice, owned by its ``kubernetes.io/service-name``.

    Conditions follow Kubernetes: ``ready`` absent or null means ready, ``serving``
    absent means the same as ``ready``, ``terminating`` absent means not terminating.
    """
    service_name = meta.label(SERVICE_NAME_LABEL)
    if not service_name:
        ctx.error(
            "metadata.labels",
            f'label "{SERVICE_NAME_LABEL}" is required (it names the Service of this slice)',
        )
    address_type = obj.string("addressType", "IPv4", required=True, check=one_of(_ADDRESS_TYPES))
    ports: list[EndpointPort] = []
    port_refs: list[tuple[str, int | str]] = []
    label = pattern(DNS_LABEL, "a DNS label")
    for entry in obj.children("ports", _ENDPOINT_PORT_FIELDS):
        # "" is what Kubernetes writes for the port of a single-port Service.
        name = entry.string("name", check=lambda v: None if v == "" else label(v))
        number = entry.integer("port", 0, required=True, minimum=1, maximum=65535)
        ports.append(
            EndpointPort(
                name=name,
                port=number,
                protocol=entry.string("protocol", "TCP", check=one_of(_L4_PROTOCOLS)),
                app_protocol=entry.string("appProtocol"),
            )
        )
        port_refs.append((entry.at("name"), name))
    if service_name:
        refs = tuple(port_refs)
        ctx.refer("metadata.labels", "EndpointSlice", meta.namespace, service_name, refs)
    entries = obj.children("endpoints", _ENDPOINT_FIELDS)
    endpoints = tuple(_endpoint(e, address_type) for e in entries)
    return EndpointSlice(
        name=meta.name,
        namespace=meta.namespace,
        service_name=service_name,
        address_type=address_type,
        ports=tuple(ports),
        endpoints=endpoints,
        ref=_ref("EndpointSlice", meta, ctx),
    )


def _endpoint(entry: Fields, address_type: str) -> Endpoint:
    addresses = entry.strings("addresses", required=True, check=_address_check(address_type))
    ready: bool = True
    serving: bool | None = None
    terminating: bool = False
    conditions = entry.child("conditions", _CONDITION_FIELDS)
    if conditions:
        ready = conditions.boolean("ready", True)
        serving = conditions.boolean("serving", None)
        terminating = conditions.boolean("terminating", False)
    target_pod = ""
    target = entry.child("targetRef", _OBJECT_REFERENCE_FIELDS)
    if target and target.raw("kind") == "Pod":
        target_pod = target.string("name")
    hints = entry.child("hints", _HINTS_FIELDS)
    if hints:
        for key in ("forZones", "forNodes"):
            for hint in hints.children(key, {"name"}):
                hint.string("name", required=True)
    if entry.has("deprecatedTopology"):
        entry.string_map("deprecatedTopology")
    return Endpoint(
        addresses=addresses,
        ready=ready,
        serving=ready if serving is None else serving,
        terminating=terminating,
        zone=entry.string("zone"),
        node_name=entry.string("nodeName"),
        hostname=entry.string("hostname"),
        target_pod=target_pod,
    )


def _address_check(address_type: str) -> Check:
    def check(value: str) -> str | None:
        if address_type == "FQDN":
            ok = DNS_SUBDOMAIN.fullmatch(value)
            return None if ok else f"must be a DNS name, got {quote(value)}"
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return f"must be an {address_type} address, got {quote(value)}"
        if address.version != (4 if address_type == "IPv4" else 6):
            return f"must be an {address_type} address (addressType), got {quote(value)}"
        return None

    return check
