"""``MeshSettings``: everything a :class:`~meshlib.Mesh` is configured with, frozen.

One value, made once — by keyword, or from the environment with
:meth:`MeshSettings.from_env` — checked when made, then read by the parts of a Mesh
(its xDS client, identity, clients and servers); ``Mesh(...)`` keyword arguments are
the same names.

Example::

    settings = MeshSettings(xds_address="istiod.mesh:15010", service="frontend",
                            namespace="shop", token_file="/var/run/meshlib/token")
    mesh = meshlib.Mesh(settings=settings)

    mesh = meshlib.Mesh(settings=MeshSettings.from_env())   # MESHLIB_* variables
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from meshlib.contract import DEFAULT_NAMESPACE, DEFAULT_TRUST_DOMAIN, MeshError

__all__ = [
    "DEFAULT_CLOSE_GRACE",
    "DEFAULT_NAMESPACE",
    "DEFAULT_RESOLVE_TIMEOUT",
    "MeshSettings",
    "XdsProtocol",
]

DEFAULT_RESOLVE_TIMEOUT = 10.0  # seconds a first call waits for its target's config
DEFAULT_CLOSE_GRACE = 30.0  # seconds a removed endpoint's channel stays for calls in flight
XdsProtocol = Literal["auto", "delta", "sotw"]
_PROTOCOLS = ("auto", "delta", "sotw")
_OFF = ("off", "0", "false", "no")


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshSettings:
    """How a Mesh reaches the control plane, who it is, and how it calls.

    * ``xds_address`` — the control plane, ``host:port`` (required).
    * ``node_id`` — default ``<service>-<hostname>-<pid>`` (see :attr:`node`).
    * ``service``, ``namespace`` — this workload; short targets (``reviews``) resolve in
      ``namespace``, as in Kubernetes DNS.
    * ``cache_path`` — keep the last good configuration on disk, so a restart works
      while the control plane is down.
    * ``xds_protocol`` — ``auto`` (delta ADS, falling back to state-of-the-world),
      ``delta`` or ``sotw``.
    * ``resolve_timeout`` — how long a first call waits for its target's
      configuration (or its own timeout, if shorter).
    * ``channel_options`` — extra grpc options for endpoint channels;
      ``close_grace`` — seconds a removed endpoint's channel lives on for calls in flight.
    * ``sleep``, ``clock`` — how waits are slept and deadlines measured (injectable, so
      tests never really sleep); the asyncio paths await ``sleep``'s result when it
      is awaitable, else ``asyncio.sleep``.
    * identity: ``service_account`` (default: ``service``), ``trust_domain``; with
      ``token`` or ``token_file`` a certificate from the control plane's CA
      (``cert_ttl`` seconds at most), renewed at half its lifetime; with ``cert_dir``
      mounted ``cert.pem``/``key.pem``/``ca.pem``, followed as they change. ``ca_root``:
      a PEM file of the mesh's trust roots, distributed out of band (a ConfigMap, say):
      the control plane must prove itself against them (TLS to the CA, mTLS to xDS
      with the workload's certificate), a CA reply that does not chain to them is
      refused, and they are the roots peers are checked against; the file is read
      again on every connection, so a root rotation is a file edit. ``ca_address``:
      the certificate service, ``host:port`` (default: ``xds_address``; a secure
      control plane serves it on a port of its own, 15012 unless told).
    * ``telemetry`` — golden metrics, tracing and access logs (default on).
    """

    xds_address: str
    node_id: str = ""
    service: str = ""
    namespace: str = DEFAULT_NAMESPACE
    cache_path: str | None = None
    xds_protocol: XdsProtocol = "auto"
    resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT
    channel_options: tuple[tuple[str, Any], ...] = ()
    close_grace: float = DEFAULT_CLOSE_GRACE
    sleep: Callable[[float], Any] = field(default=time.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)
    service_account: str | None = None
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    cert_dir: str | None = None
    cert_ttl: float | None = None
    ca_root: str | None = None
    ca_address: str | None = None
    telemetry: bool = True

    def __post_init__(self) -> None:
        if not self.xds_address:
            raise MeshError("Mesh needs xds_address (host:port of the control plane)")
        if self.xds_protocol not in _PROTOCOLS:
            raise MeshError(f"xds_protocol must be auto, delta or sotw, got "
                            f"{self.xds_protocol!r}")
        if self.resolve_timeout < 0:
            raise MeshError(f"resolve_timeout must be >= 0 seconds, got "
                            f"{self.resolve_timeout}")
        if not isinstance(self.channel_options, tuple):
            object.__setattr__(self, "channel_options", tuple(self.channel_options))

    @property
    def node(self) -> str:
        """The node id the control plane sees: ``node_id``, else
        ``<service>-<hostname>-<pid>``."""
        return self.node_id or f"{self.service or 'meshlib'}-{socket.gethostname()}-" \
                               f"{os.getpid()}"

    @property
    def has_identity(self) -> bool:
        """Whether a workload identity is configured (token, token file or cert dir)."""
        return self.token is not None or self.token_file is not None \
            or self.cert_dir is not None

    @property
    def certificate_address(self) -> str:
        """Where certificates are requested: ``ca_address``, else ``xds_address``."""
        return self.ca_address or self.xds_address

    def replace(self, **changes: Any) -> MeshSettings:
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 **overrides: Any) -> MeshSettings:
        """Settings from the environment; keyword arguments override them.

        ``MESHLIB_XDS_ADDRESS`` (else the first server of the gRPC bootstrap named by
        ``GRPC_XDS_BOOTSTRAP``), ``MESHLIB_NODE_ID``, ``MESHLIB_SERVICE``,
        ``MESHLIB_NAMESPACE`` (else ``POD_NAMESPACE``, else ``default``),
        ``MESHLIB_XDS_CACHE`` (path of the persisted configuration),
        ``MESHLIB_XDS_PROTOCOL`` (``auto``, ``delta`` or ``sotw``) and
        ``MESHLIB_RESOLVE_TIMEOUT`` (seconds); for the identity
        ``MESHLIB_SERVICE_ACCOUNT``, ``MESHLIB_TRUST_DOMAIN``, ``MESHLIB_TOKEN_FILE``,
        ``MESHLIB_CERT_DIR``, ``MESHLIB_CA_ROOT``, ``MESHLIB_CA_ADDRESS`` and
        ``MESHLIB_CERT_TTL`` (seconds);
        ``MESHLIB_TELEMETRY``
        (``off`` turns metrics, tracing and access logs off).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        address = env.get("MESHLIB_XDS_ADDRESS", "")
        node_id = env.get("MESHLIB_NODE_ID", "")
        if not address and env.get("GRPC_XDS_BOOTSTRAP"):
            address, boot_node = _from_bootstrap(env["GRPC_XDS_BOOTSTRAP"])
            node_id = node_id or boot_node or ""
        if not address and "xds_address" not in overrides:
            raise MeshError("Mesh.from_env: set MESHLIB_XDS_ADDRESS=host:port (or "
                            "GRPC_XDS_BOOTSTRAP) to the control plane's xDS address")
        values.update(xds_address=address, node_id=node_id,
                      service=env.get("MESHLIB_SERVICE", ""),
                      namespace=env.get("MESHLIB_NAMESPACE") or env.get("POD_NAMESPACE")
                      or DEFAULT_NAMESPACE)
        if env.get("MESHLIB_XDS_CACHE"):
            values["cache_path"] = env["MESHLIB_XDS_CACHE"]
        protocol = env.get("MESHLIB_XDS_PROTOCOL")
        if protocol:
            if protocol not in _PROTOCOLS:
                raise MeshError(f"MESHLIB_XDS_PROTOCOL must be auto, delta or sotw, got "
                                f"{protocol!r}")
            values["xds_protocol"] = protocol
        for var, name in (("MESHLIB_SERVICE_ACCOUNT", "service_account"),
                          ("MESHLIB_TRUST_DOMAIN", "trust_domain"),
                          ("MESHLIB_TOKEN_FILE", "token_file"),
                          ("MESHLIB_CERT_DIR", "cert_dir"),
                          ("MESHLIB_CA_ROOT", "ca_root"),
                          ("MESHLIB_CA_ADDRESS", "ca_address")):
            if env.get(var):
                values[name] = env[var]
        for var, name in (("MESHLIB_RESOLVE_TIMEOUT", "resolve_timeout"),
                          ("MESHLIB_CERT_TTL", "cert_ttl")):
            if env.get(var):
                values[name] = _seconds(var, env[var])
        if env.get("MESHLIB_TELEMETRY", "").lower() in _OFF:
            values["telemetry"] = False
        values.update(overrides)
        return cls(**values)


def _seconds(var: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise MeshError(f"{var} must be a number of seconds, got {text!r}") from None


def _from_bootstrap(path: str) -> tuple[str, str | None]:
    try:
        with open(path) as f:
            data = json.load(f)
        uri = data["xds_servers"][0]["server_uri"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise MeshError(f"GRPC_XDS_BOOTSTRAP={path}: cannot read the xDS server from it: "
                        f"{err}") from err
    return uri.removeprefix("dns:///"), (data.get("node") or {}).get("id")


def settings_of(settings: MeshSettings | None, xds_address: str | None,
                options: Mapping[str, Any]) -> MeshSettings:
    """The settings of ``Mesh(xds_address, settings=..., **options)``: keyword arguments
    as before :class:`MeshSettings` existed (None meaning "the default"), or a
    settings object, optionally with overrides."""
    given = {k: v for k, v in options.items() if v is not None}  # None: the default
    if xds_address is not None:
        given["xds_address"] = xds_address
    if settings is not None:
        return settings.replace(**given) if given else settings
    if "xds_address" not in given:
        raise MeshError("Mesh needs xds_address (host:port of the control plane)")
    return MeshSettings(**given)

