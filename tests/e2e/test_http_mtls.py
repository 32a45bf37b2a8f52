"""mesh.http_client() over mTLS: the control plane's CA, a real uvicorn server requiring
client certificates from it, and the destination identity checked in the handshake."""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import meshlib
from meshlib.security._certificates import CA_FILE, CERT_FILE, KEY_FILE, write_files
from tests.e2e.conftest import free_port

TOKENS = {"frontend": "frontend-token-0123456789", "web": "web-token-0123456789",
          "rogue": "rogue-token-0123456789"}


def _yaml(port: int) -> str:
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: http, appProtocol: http}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-0, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP, appProtocol: http}}]
endpoints:
  - addresses: ["127.0.0.1"]
    conditions: {{ready: true}}
---
apiVersion: meshlib.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: web, namespace: default}}
spec:
  targetRef: {{kind: Service, name: web}}
  mtls: {{mode: STRICT}}
"""


async def _peer(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello over {request.scope['scheme']}")


@pytest.fixture
def secure_http(tmp_path: Path, control_plane_factory):  # type: ignore[no-untyped-def]
    port = free_port()
    config = tmp_path / "mesh"
    config.mkdir()
    (config / "mesh.yaml").write_text(_yaml(port))
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n" + "".join(
        f"- serviceAccount: default/{sa}\n  token: {t}\n" for sa, t in TOKENS.items()))
    tokens.chmod(0o600)
    cp = control_plane_factory(config, extra_args=["--ca-dir", str(tmp_path / "ca"),
                                                   "--token-file", str(tokens)])
    meshes: list[meshlib.Mesh] = []
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def mesh(service: str, **kwargs: object) -> meshlib.Mesh:
        made = meshlib.Mesh(cp.xds_address, service=service, **kwargs)  # type: ignore[arg-type]
        meshes.append(made)
        return made

    def serve(account: str) -> None:
        """uvicorn on the Service's port with ``account``'s certificate, requiring a
        client certificate from the mesh CA."""
        server_mesh = mesh(account, token=TOKENS[account])
        assert server_mesh.certificates is not None
        cert = server_mesh.certificates.current
        assert cert is not None
        certs = tmp_path / f"certs-{account}"
        write_files(certs, cert)
        server = uvicorn.Server(uvicorn.Config(
            Starlette(routes=[Route("/hello", _peer)]), host="127.0.0.1", port=port,
            log_level="warning", lifespan="off", ssl_certfile=str(certs / CERT_FILE),
            ssl_keyfile=str(certs / KEY_FILE), ssl_ca_certs=str(certs / CA_FILE),
            ssl_cert_reqs=ssl.CERT_REQUIRED))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        servers.append((server, thread))

    yield mesh, serve
    for server, thread in servers:
        server.should_exit = True
        thread.join(5)
    for made in meshes:
        made.close()


def test_http_client_speaks_mtls_to_the_destination_identity(secure_http):
    mesh, serve = secure_http
    serve("web")
    client = mesh("frontend", token=TOKENS["frontend"])
    with client.http_client(timeout=5) as http:
        response = http.get("http://web/hello")
    assert response.status_code == 200
    assert response.text == "hello over https"


def test_a_server_with_another_identity_is_refused(secure_http):
    mesh, serve = secure_http
    serve("rogue")  # a valid mesh certificate, but not web's identity
    client = mesh("frontend", token=TOKENS["frontend"])
    with client.http_client(timeout=5) as http, pytest.raises(httpx.ConnectError) as err:
        http.get("http://web/hello")
    assert "certificate verify failed" in str(err.value) or "match" in str(err.value)


def test_a_client_without_identity_cannot_call_a_strict_server(secure_http):
    mesh, serve = secure_http
    serve("web")
    client = mesh("frontend")  # no token: no identity, plaintext
    with client.http_client(timeout=5) as http, pytest.raises(httpx.HTTPError):
        http.get("http://web/hello")
