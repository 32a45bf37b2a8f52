"""The resource types the fake API server serves: the built-in ones, and those a
CustomResourceDefinition registers.

A :class:`ResourceType` is one row of discovery (``/api/v1``, ``/apis/<g>/<v>``): what
``kubectl api-resources`` prints. Objects are stored per *group resource*
(``trafficpolicies.meshlib.dev``), so every served version of a CRD reads the same
objects (conversion strategy ``None``: only ``apiVersion`` changes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BUILTIN_TYPES", "GATEWAY_GROUP", "ResourceType", "types_from_crd"]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
GATEWAY_GROUP = "gateway.networking.k8s.io"


@dataclass(frozen=True, kw_only=True)
class ResourceType:
    """One resource of one group version, as discovery lists it."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    status: bool = False
    """Has the ``/status`` subresource: the main endpoint ignores status changes."""
    custom: bool = False
    """Served the way a CRD's resources are: ``metadata.generation``, no strategic merge
    patch, schema defaults and pruning (Gateway API routes are CRDs on a real cluster)."""
    stored: bool = True
    """False for create-only reviews (TokenReview): answered, never stored."""
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    """The openAPIV3Schema of a CRD version."""
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """``services``, ``leases.coordination.k8s.io``: the storage key and the name
        the real server uses in its error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def discovery(self) -> list[dict[str, Any]]:
        """This resource's APIResource entries (the resource and its subresources)."""
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries = [main]
        if self.status:
            entries.append({"name": f"{self.plural}/status", "singularName": "",
                            "namespaced": self.namespaced, "kind": self.kind,
                            "verbs": ["get", "patch", "update"]})
        if self.plural == "serviceaccounts":
            entries.append({"name": "serviceaccounts/token", "singularName": "",
                            "namespaced": True, "group": "authentication.k8s.io",
                            "version": "v1", "kind": "TokenRequest", "verbs": ["create"]})
        return entries


def _t(group: str, version: str, kind: str, plural: str, *, namespaced: bool = True,
       **kw: Any) -> ResourceType:
    return ResourceType(group=group, version=version, kind=kind, plural=plural,
                        singular=kind.lower(), namespaced=namespaced, **kw)


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _t("", "v1", "Namespace", "namespaces", namespaced=False, short_names=("ns",), status=True,
       verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    _t("", "v1", "Service", "services", short_names=("svc",), categories=("all",),
       status=True, verbs=("create", "delete", "deletecollection", "get", "list", "patch",
                           "update", "watch")),
    _t("", "v1", "ConfigMap", "configmaps", short_names=("cm",)),
    _t("", "v1", "Secret", "secrets"),
    _t("", "v1", "ServiceAccount", "serviceaccounts", short_names=("sa",)),
    _t("", "v1", "Pod", "pods", short_names=("po",), categories=("all",), status=True),
    _t("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    _t("coordination.k8s.io", "v1", "Lease", "leases"),
    _t("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", namespaced=False,
       verbs=("create",), stored=False),
    _t("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
       namespaced=False, short_names=("crd", "crds"), categories=("api-extensions",),
       status=True, custom=False),
    _t(GATEWAY_GROUP, "v1", "GRPCRoute", "grpcroutes", categories=("gateway-api",),
       status=True, custom=True),
    _t(GATEWAY_GROUP, "v1", "HTTPRoute", "httproutes", categories=("gateway-api",),
       status=True, custom=True),
)


def types_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types a CustomResourceDefinition serves, one per served version."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for version in spec.get("versions") or ():
        if not version.get("served", True):
            continue
        out.append(ResourceType(
            group=spec["group"], version=version["name"], kind=names["kind"],
            plural=names["plural"], singular=names.get("singular") or names["kind"].lower(),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            status="status" in (version.get("subresources") or {}),
            custom=True,
            schema=(version.get("schema") or {}).get("openAPIV3Schema"),
            printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
        ))
    return out
