"""The CA in a cluster: its key in a Secret, its root published as ConfigMaps, and
workloads authenticated by TokenReview of their projected service-account tokens.

* :class:`SecretCaStore` keeps the CA in the Secret ``meshlib-system/meshlib-ca``
  (``ca-key.pem``, ``ca-cert.pem``; or an operator's ``tls.key``/``tls.crt``, a root
  or an intermediate with its chain). Replicas starting together race to create it:
  the create is the API server's (409 for the loser), and the loser uses the winner's.
* :class:`TokenReviewAuthenticator` asks the API server who a bearer token is
  (``authentication.k8s.io/v1`` TokenReview, audience ``meshlib``): a service-account
  token names ``system:serviceaccount:<ns>:<sa>``, and that one identity is what the
  caller may get a certificate for. Expired tokens, tokens of other audiences, and
  anything that is not a service account are refused. Successful reviews are cached for
  a few seconds (as the API server's own authenticator cache does), never past the
  token's expiry.
* :class:`RootPublisher` writes the root certificate into the ConfigMap
  ``meshlib-ca-root`` (key ``root-cert.pem``) of every namespace with mesh workloads,
  as Istio does with ``istio-ca-root-cert``; workloads mount it and pin it
  (``MESHLIB_CA_ROOT``).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable

from meshlib.contract import MeshError
from xds_server.ca._store import CA_CERT_FILE, CA_KEY_FILE, CaAlreadyStored
from xds_server.ca._tokens import AuthenticationError, AuthenticatorUnavailable, Caller
from xds_server.kube_api import KubeApi, KubeApiError, Resource

__all__ = [
    "CA_SECRET",
    "ROOT_CONFIGMAP",
    "ROOT_CONFIGMAP_KEY",
    "TOKEN_AUDIENCE",
    "RootPublisher",
    "SecretCaStore",
    "TokenReviewAuthenticator",
]

log = logging.getLogger(__name__)

CA_SECRET = "meshlib-ca"
ROOT_CONFIGMAP = "meshlib-ca-root"
ROOT_CONFIGMAP_KEY = "root-cert.pem"
TOKEN_AUDIENCE = "meshlib"
_SECRETS = Resource("Secret", "v1", "secrets")
_CONFIGMAPS = Resource("ConfigMap", "v1", "configmaps")
_TOKEN_REVIEWS = Resource("TokenReview", "authentication.k8s.io/v1", "tokenreviews",
                          namespaced=False)
_SA_PREFIX = "system:serviceaccount:"
_REVIEW_CACHE_SECONDS = 10.0


class SecretCaStore:
    """The CA key and certificate in a Secret (a :class:`~xds_server.ca.CaStore`)."""

    def __init__(self, api: KubeApi, namespace: str, name: str = CA_SECRET) -> None:
        self.api, self.namespace, self.name = api, namespace, name

    def load(self) -> tuple[bytes, bytes] | None:
        try:
            secret = self.api.get(_SECRETS.path(self.namespace, self.name))
        except KubeApiError as err:
            if err.status == 404:
                return None
            raise
        data = secret.get("data") or {}
        for key_name, cert_name in ((CA_KEY_FILE, CA_CERT_FILE), ("tls.key", "tls.crt")):
            if key_name in data and cert_name in data:
                return base64.b64decode(data[key_name]), base64.b64decode(data[cert_name])
        raise MeshError(
            f"CA: Secret {self.namespace}/{self.name} has neither {CA_KEY_FILE} and "
            f"{CA_CERT_FILE} nor tls.key and tls.crt")

    def save(self, key_pem: bytes, cert_pem: bytes) -> None:
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "labels": {"app.kubernetes.io/managed-by": "meshlib"}},
                "data": {CA_KEY_FILE: base64.b64encode(key_pem).decode(),
                         CA_CERT_FILE: base64.b64encode(cert_pem).decode()}}
        try:
            self.api.create(_SECRETS.path(self.namespace), body)
        except KubeApiError as err:
            if err.status == 409:
                raise CaAlreadyStored(f"Secret {self.namespace}/{self.name}") from err
            raise
        log.info("CA created and stored in Secret %s/%s", self.namespace, self.name)


class TokenReviewAuthenticator:
    """Bearer tokens reviewed by the API server (a ``TokenAuthenticator``)."""

    blocking = True  # an HTTP request: the certificate service calls it in a thread

    def __init__(self, api: KubeApi, *, audiences: Iterable[str] = (TOKEN_AUDIENCE,),
                 cache_seconds: float = _REVIEW_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.audiences = tuple(audiences)
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()
        self.reviews = 0  # TokenReviews sent

    def authenticate(self, token: str) -> Caller:
        if not token:
            raise AuthenticationError("missing bearer token")
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock()
        with self._lock:
            cached = self._cache.get(digest)
            if cached is not None and cached[0] > now:
                return cached[1]
        body = {"apiVersion": _TOKEN_REVIEWS.api_version, "kind": _TOKEN_REVIEWS.kind,
                "spec": {"token": token, "audiences": list(self.audiences)}}
        try:
            review = self.api.create(_TOKEN_REVIEWS.path(), body)
        except (KubeApiError, OSError) as err:
            log.warning("TokenReview failed: %s", err)
            raise AuthenticatorUnavailable("cannot review the token now") from err
        self.reviews += 1
        status = review.get("status") or {}
        if not status.get("authenticated"):
            log.info("TokenReview refused a token: %s", status.get("error", "not authenticated"))
            raise AuthenticationError("token not authenticated")
        if self.audiences and not set(status.get("audiences") or []) & set(self.audiences):
            raise AuthenticationError("token not for audience " + ", ".join(self.audiences))
        username = str((status.get("user") or {}).get("username", ""))
        if not username.startswith(_SA_PREFIX) or username.count(":") != 3:
            raise AuthenticationError("not a service account token")
        namespace, account = username[len(_SA_PREFIX):].split(":")
        caller = Caller((f"{namespace}/{account}",))
        with self._lock:
            self._cache[digest] = (now + self._cache_seconds, caller)
            if len(self._cache) > 10_000:  # bounded: drop the expired
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        return caller


class RootPublisher:
    """Keeps the ConfigMap ``meshlib-ca-root`` holding ``root_pem`` in each namespace
    it is given (blocking calls: run it in a thread)."""

    def __init__(self, api: KubeApi, root_pem: bytes, *, name: str = ROOT_CONFIGMAP) -> None:
        self.api, self.root = api, root_pem.decode()
        self.name = name
        self._done: dict[str, str] = {}  # namespace -> root written there
        self.writes = 0

    def publish(self, namespaces: Iterable[str]) -> int:
        """Create or update the ConfigMap where it is missing or stale; how many
        writes that took. Failures are logged; the next call tries again."""
        written = 0
        for namespace in sorted(set(namespaces)):
            if self._done.get(namespace) == self.root:
                continue
            try:
                written += self._ensure(namespace)
                self._done[namespace] = self.root
            except (KubeApiError, OSError) as err:
                log.warning("root ConfigMap in %s not written: %s", namespace, err)
        self.writes += written
        return written

    def _ensure(self, namespace: str) -> int:
        path = _CONFIGMAPS.path(namespace, self.name)
        data = {ROOT_CONFIGMAP_KEY: self.root}
        try:
            current = self.api.get(path)
        except KubeApiError as err:
            if err.status != 404:
                raise
            body = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": self.name, "namespace": namespace,
                                 "labels": {"app.kubernetes.io/managed-by": "meshlib"}},
                    "data": data}
            try:
                self.api.create(_CONFIGMAPS.path(namespace), body)
            except KubeApiError as create_err:
                if create_err.status != 409:  # another replica made it: check next time
                    raise
            return 1
        if (current.get("data") or {}) == data:
            return 0
        self.api.patch(path, {"data": data})
        return 1
