"""The few Kubernetes API calls the control plane makes, on the ``kubernetes`` client.

Objects travel as plain dicts, exactly as the API server sends them: the same
Kubernetes-shaped documents the YAML loader reads, so one parser serves files and the
cluster. The client's ``ApiClient`` does the rest: configuration (in-cluster or a
kubeconfig), authentication, TLS, connection pooling. A watch is a streamed response
read line by line, as client-go reads it.

Example::

    api = KubeApi.from_config(kubeconfig=None)          # in-cluster, else ~/.kube/config
    items, rv = api.list_all(SERVICES)
    for event in api.watch(SERVICES.path(), rv, timeout_seconds=300):
        ...
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "JSON_PATCH",
    "MERGE_PATCH",
    "KubeApi",
    "KubeApiError",
    "Resource",
]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
_LIST_LIMIT = 500  # items per page, as client-go's reflector asks


class KubeApiError(Exception):
    """A request the API server refused: its HTTP ``status`` and the ``Status``
    object's ``reason`` (``NotFound``, ``Conflict``, ``AlreadyExists``, ``Expired``,
    ...) and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @classmethod
    def from_status(cls, status: Mapping[str, Any], default_code: int = 500) -> KubeApiError:
        """From a ``Status`` object (an error response's body, or a watch ERROR)."""
        return cls(int(status.get("code") or default_code), str(status.get("reason", "")),
                   str(status.get("message", "")))

    @property
    def gone(self) -> bool:
        """The resourceVersion is too old (410): list again."""
        return self.status == 410


@dataclass(frozen=True, slots=True)
class Resource:
    """A kind the control plane reads: where it lives in the API."""

    kind: str
    api_version: str  # "v1" or "group/version"
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        """The URL path: all namespaces (``namespace`` None), one namespace, one object."""
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if namespace is not None and self.namespaced:
            base += f"/namespaces/{namespace}"
        path = f"{base}/{self.plural}"
        if name is not None:
            path += f"/{name}"
            if subresource is not None:
                path += f"/{subresource}"
        return path


class KubeApi:
    """JSON in, dicts out, over a configured ``kubernetes.client.ApiClient``."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def from_config(cls, kubeconfig: str | None = None, context: str | None = None) -> KubeApi:
        """In-cluster configuration when running in a pod and no ``kubeconfig`` is
        given, else the kubeconfig (``$KUBECONFIG`` or ``~/.kube/config`` by default)."""
        from kubernetes import client, config

        configuration = client.Configuration()
        if kubeconfig is None:
            try:
                config.load_incluster_config(client_configuration=configuration)
                return cls(client.ApiClient(configuration))
            except config.ConfigException:
                pass
        config.load_kube_config(config_file=kubeconfig, context=context,
                                client_configuration=configuration, persist_config=False)
        return cls(client.ApiClient(configuration))

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ requests

    def request(self, method: str, path: str, *, query: Sequence[tuple[str, Any]] = (),
                body: Any = None, content_type: str = "application/json",
                timeout: float | tuple[float, float] | None = 30.0) -> Any:
        """One request; the decoded JSON body, or :class:`KubeApiError`."""
        response = self._send(method, path, query=query, body=body,
                              content_type=content_type, timeout=timeout)
        try:
            raw = response.read()
        finally:
            response.response.release_conn()
        document = json.loads(raw) if raw else {}
        if not 200 <= response.status < 300:
            raise _error(response.status, document)
        return document

    def _send(self, method: str, path: str, *, query: Sequence[tuple[str, Any]] = (),
              body: Any = None, content_type: str = "application/json",
              timeout: float | tuple[float, float] | None = 30.0) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        method, url, headers, body, post = self.client.param_serialize(
            method, path, query_params=list(query), header_params=headers, body=body,
            auth_settings=["BearerToken"])
        return self.client.call_api(method, url, headers, body, post, _request_timeout=timeout)

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def create(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.request("POST", path, body=dict(body))

    def replace(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.request("PUT", path, body=dict(body))

    def patch(self, path: str, body: Any, content_type: str = MERGE_PATCH) -> Any:
        return self.request("PATCH", path, body=body, content_type=content_type)

    def list_all(self, resource: Resource, namespace: str | None = None
                 ) -> tuple[list[dict[str, Any]], str]:
        """Every object (paged), each with its ``kind`` and ``apiVersion`` set (list
        items come without them), and the list's resourceVersion to watch from."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", _LIST_LIMIT)]
            if token:
                query.append(("continue", token))
            page = self.request("GET", resource.path(namespace), query=query)
            for item in page.get("items") or []:
                item["kind"] = resource.kind
                item["apiVersion"] = resource.api_version
                items.append(item)
            metadata = page.get("metadata") or {}
            token = metadata.get("continue") or ""
            if not token:
                return items, str(metadata.get("resourceVersion", ""))

    def watch(self, resource: Resource, resource_version: str, *,
              namespace: str | None = None, timeout_seconds: int = 300,
              on_response: Any = None) -> Iterator[dict[str, Any]]:
        """The events after ``resource_version`` (``{"type", "object"}``, BOOKMARKs
        included), until the server ends the watch (``timeout_seconds``). An ERROR
        event raises :class:`KubeApiError` (410 ``Expired``: list again).
        ``on_response`` gets the streaming response, so another thread can close it."""
        query = [("watch", "true"), ("resourceVersion", resource_version),
                 ("allowWatchBookmarks", "true"), ("timeoutSeconds", timeout_seconds)]
        response = self._send("GET", resource.path(namespace), query=query,
                              timeout=(10.0, timeout_seconds + 30.0))
        raw = response.response
        if on_response is not None:
            on_response(raw)
        try:
            if not 200 <= response.status < 300:
                body = raw.read()
                raise _error(response.status, json.loads(body) if body else {})
            for line in _lines(raw):
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    raise KubeApiError.from_status(event.get("object") or {})
                obj = event.get("object") or {}
                obj.setdefault("kind", resource.kind)
                obj.setdefault("apiVersion", resource.api_version)
                yield event
        finally:
            raw.release_conn()


def _lines(raw: Any) -> Iterator[bytes]:
    """The newline-separated JSON documents of a streamed (chunked) response."""
    pending = b""
    for chunk in raw.stream(amt=None, decode_content=True):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def _error(status: int, document: Any) -> KubeApiError:
    if isinstance(document, dict) and document.get("kind") == "Status":
        return KubeApiError.from_status(document, status)
    return KubeApiError(status, "", json.dumps(document)[:200])
