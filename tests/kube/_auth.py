"""Who a request is, and tokens: the optional bearer-token check of the fake, the
``serviceaccounts/<name>/token`` subresource (TokenRequest) and TokenReview."""

from __future__ import annotations

import time
from typing import Any

from tests.kube._errors import ApiError
from tests.kube._messages import Request, Response, json_response, read_body
from tests.kube._resources import ResourceType
from tests.kube._store import Store
from tests.kube._tokens import TokenAuthority, TokenError

__all__ = ["Auth"]

Obj = dict[str, Any]


class Auth:
    """Bearer-token authentication, TokenRequest and TokenReview."""

    def __init__(self, store: Store, tokens: TokenAuthority,
                 bearer_token: str | None) -> None:
        self.store = store
        self.tokens = tokens
        self.bearer_token = bearer_token

    def check(self, req: Request) -> None:
        if self.bearer_token is None:
            return
        auth = req.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if token and token == self.bearer_token:
            return
        if token:
            try:
                self.tokens.verify(token, [self.tokens.issuer])
                return
            except TokenError:
                pass
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def token_request(self, rt: ResourceType, ns: str | None, name: str,
                       req: Request) -> Response:
        sa = self.store.get(rt.group_resource, (ns or "", name))
        if sa is None:
            raise ApiError.not_found(rt.group_resource, name)
        body = read_body(req) or {}
        spec = dict(body.get("spec") or {})
        audiences = spec.get("audiences") or [self.tokens.issuer]
        seconds = int(spec.get("expirationSeconds") or 3600)
        if seconds < 600:
            raise ApiError.invalid("TokenRequest", "authentication.k8s.io", name, [(
                "FieldValueInvalid", "spec.expirationSeconds",
                f"Invalid value: {seconds}: may not specify a duration less than 10 minutes")])
        pod = None
        ref = spec.get("boundObjectRef")
        if ref and ref.get("kind") == "Pod":
            found = self.store.get("pods", (ns or "", ref.get("name", "")))
            if found is None:
                raise ApiError.not_found("pods", ref.get("name", ""))
            pod = (ref["name"], found["metadata"]["uid"])
        token, exp = self.tokens.mint(namespace=ns or "", service_account=name,
                                      service_account_uid=sa["metadata"]["uid"],
                                      audiences=audiences, expires_in=seconds, pod=pod)
        spec.update(audiences=audiences, expirationSeconds=seconds)
        return json_response(201, {
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": None},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))}})

    def review(self, token: str, audiences: list[str]) -> Obj:
        """The ``status`` of a TokenReview of ``token``."""
        audiences = audiences or [self.tokens.issuer]
        try:
            claims = self.tokens.verify(token, audiences)
            sa = self.store.get("serviceaccounts", (claims.namespace, claims.service_account))
            if sa is None:
                raise TokenError(f'invalid bearer token, serviceaccounts '
                                 f'"{claims.service_account}" not found')
            if sa["metadata"]["uid"] != claims.service_account_uid:
                raise TokenError(f"invalid bearer token, service account UID "
                                 f"({sa['metadata']['uid']}) does not match claim "
                                 f"({claims.service_account_uid})")
            extra = {"authentication.kubernetes.io/credential-id": [f"JTI={claims.jti}"]}
            if claims.pod:
                pod = self.store.get("pods", (claims.namespace, claims.pod[0]))
                if pod is None or pod["metadata"]["uid"] != claims.pod[1]:
                    raise TokenError(f'invalid bearer token, pods "{claims.pod[0]}" not found')
                extra["authentication.kubernetes.io/pod-name"] = [claims.pod[0]]
                extra["authentication.kubernetes.io/pod-uid"] = [claims.pod[1]]
        except TokenError as err:
            return {"user": {}, "error": f"[{err}]"}
        return {"authenticated": True, "audiences": list(claims.audiences), "user": {
            "username": claims.username, "uid": claims.service_account_uid,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{claims.namespace}",
                       "system:authenticated"],
            "extra": extra}}

    def token_review(self, req: Request) -> Response:
        body = read_body(req) or {}
        if body.get("kind") not in (None, "TokenReview"):
            raise ApiError.bad_request(f"the kind in the data ({body['kind']}) does not match "
                                       f"the expected kind (TokenReview)")
        spec = body.get("spec") or {}
        if not spec.get("token"):
            raise ApiError.invalid("TokenReview", "authentication.k8s.io", "", [(
                "FieldValueRequired", "spec.token", "Required value")])
        status = self.review(spec["token"], list(spec.get("audiences") or ()))
        return json_response(201, {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                                "metadata": {"creationTimestamp": None}, "spec": spec,
                                "status": status})
