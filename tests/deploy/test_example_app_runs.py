"""The example app runs as its Deployment says, against a real control plane.

No cluster here, so what only a cluster gives is stood in for on loopback: the
control plane runs in file mode, secure (mTLS xDS, the CA over TLS), with the
example's Service, GRPCRoute and policies and an EndpointSlice for the app; the root
ConfigMap and the projected token are files; a bootstrap token for ``shop/cart``
stands in for TokenReview. Everything else is the Deployment's env as kubelet expands
it, with the two addresses and two paths pointed at those stand-ins: ``app.py``
(``Mesh.from_env()``) gets its certificate, serves STRICT mTLS, and its call to
``cart`` is answered for ``spiffe://cluster.local/ns/shop/sa/cart``.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.deploy.manifests import DEPLOY, MESH_KINDS, ROOT, container, container_env, find, render
from tests.e2e.conftest import free_port, start_control_plane, stop_process
from xds_server.ca import CA_CERT_FILE

TOKEN = "cart-token-0123456789abcdef"
IDENTITY = "spiffe://cluster.local/ns/shop/sa/cart"


def mesh_config(directory: Path, app_port: int) -> Path:
    """The example's mesh objects, and the EndpointSlice a cluster would make for the
    pod (here: the app on 127.0.0.1:app_port)."""
    directory.mkdir()
    objects = [o for o in render("example-app") if o["kind"] in MESH_KINDS]
    objects.append({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "cart-local", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "cart"}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": app_port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True},
                       "targetRef": {"kind": "Pod", "namespace": "shop",
                                     "name": "cart-6d4f9c7b8-x2x9q"}}]})
    (directory / "shop.yaml").write_text(yaml.safe_dump_all(objects))
    return directory


def read_lines_until(proc: subprocess.Popen, wanted: str, seconds: float) -> list[str]:
    """The process's output lines, until one contains ``wanted`` (or time is up)."""
    assert proc.stdout is not None
    lines: list[str] = []
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and proc.poll() is None:
            if selector.select(timeout=0.2):
                line = proc.stdout.readline()
                lines.append(line.rstrip())
                if wanted in line:
                    break
    return lines


def test_app_runs_from_its_deployments_env(tmp_path: Path) -> None:
    app_port = free_port()
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(f"tokens:\n- serviceAccount: shop/cart\n  token: {TOKEN}\n")
    tokens.chmod(0o600)
    cp = start_control_plane(mesh_config(tmp_path / "config", app_port),
                             tmp_path / "control-plane.log",
                             extra_args=["--ca-dir", str(tmp_path / "ca"),
                                         "--token-file", str(tokens)], secure=True)
    app = None
    try:
        # The pod's volumes: the root ConfigMap and the projected token, as files.
        root = tmp_path / "ca-root" / "root-cert.pem"
        root.parent.mkdir()
        root.write_bytes((tmp_path / "ca" / CA_CERT_FILE).read_bytes())
        token = tmp_path / "token" / "token"
        token.parent.mkdir()
        token.write_text(TOKEN)

        deployment = find(render("example-app"), "Deployment", "cart")
        pod = {"metadata": {"name": "cart-6d4f9c7b8-x2x9q", "namespace": "shop"},
               "spec": deployment["spec"]["template"]["spec"]}
        env = container_env(pod, container(deployment))
        stand_ins = {"MESHLIB_XDS_ADDRESS": cp.xds_address,
                     "MESHLIB_CA_ADDRESS": cp.ca_address,
                     "MESHLIB_CA_ROOT": str(root), "MESHLIB_TOKEN_FILE": str(token)}
        assert set(stand_ins) <= set(env)
        env.update(stand_ins)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("MESHLIB_")}
        app = subprocess.Popen(
            [sys.executable, str(DEPLOY / "example-app" / "app.py")],
            env={**inherited, **env, "PYTHONPATH": str(ROOT), "CART_PORT": str(app_port),
                 "CART_CALL_INTERVAL": "0.2"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
        lines = read_lines_until(app, f"answered {IDENTITY}", seconds=30)
        output = "\n".join(lines)
        assert f"cart-6d4f9c7b8-x2x9q: serving shop.Cart on port {app_port} (STRICT) as " \
               "cart in shop" in output, output
        assert f"cart-6d4f9c7b8-x2x9q: cart-6d4f9c7b8-x2x9q answered {IDENTITY}" in output, \
            output
    finally:
        if app is not None:
            stop_process(app)
            if app.stdout is not None:
                app.stdout.close()
        stop_process(cp.proc)
