"""The examples run against the shipped config (examples/mesh) on the ports it names,
as their docstrings say to run them: each a process of its own, stopped by PID."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, http_get, stop_process

EXAMPLES = ROOT / "examples"


@pytest.fixture
def run(tmp_path: Path) -> Iterator:
    """``run(script, *args) -> Popen`` of an example, its output in a log file."""
    procs: list[tuple[subprocess.Popen, Path]] = []

    def start(script: str, *args: str) -> subprocess.Popen:
        log = tmp_path / f"{Path(script).stem}-{len(procs)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, str(EXAMPLES / script), *args],
                                    stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        procs.append((proc, log))
        proc.log = log  # type: ignore[attr-defined]
        return proc

    yield start
    for proc, _ in procs:
        stop_process(proc)


def wait_for(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_http_examples_call_each_other_through_the_mesh(control_plane_factory, run):
    cp = control_plane_factory(EXAMPLES / "mesh")
    run("http/starlette_app.py", "--port", "8082", "--xds-address", cp.xds_address)
    run("http/flask_app.py", "--port", "8081", "--xds-address", cp.xds_address)
    wait_for(lambda: http_get("http://127.0.0.1:8081/products/7")[0] == 200, "products")
    status, body = http_get("http://127.0.0.1:8081/products/7")
    assert status == 200, body
    assert json.loads(body) == {"id": 7, "reviews": {"id": "7", "stars": 5,
                                                     "served_by": "reviews-http"}}


def test_mesh_server_and_the_clients_against_the_shipped_config(control_plane_factory, run):
    cp = control_plane_factory(EXAMPLES / "mesh")
    server = run("mesh_server.py", "--port", "50061", "--xds-address", cp.xds_address)
    run("reviews_server.py", "--name", "reviews-v1-b", "--port", "50062")
    run("reviews_server.py", "--name", "reviews-v2-a", "--port", "50063")
    wait_for(lambda: "serving on 127.0.0.1:50061" in server.log.read_text(), "mesh_server")
    client = run("meshlib_client.py", "--xds-address", cp.xds_address, "--seconds", "2",
                 "--one-line")
    assert client.wait(timeout=30) == 0, client.log.read_text()
    lines = client.log.read_text().splitlines()
    assert lines and all("0 errors" in line for line in lines if "calls" in line), lines
    assert "reviews-v1-a: call from a plaintext caller" in server.log.read_text()


def test_reviews_server_refuses_a_taken_port(run):
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = run("reviews_server.py", "--name", "reviews-x", "--port", str(port))
        assert proc.wait(timeout=30) == 1
    assert f"cannot serve reviews-x on 127.0.0.1:{port}: address already in use" in \
        proc.log.read_text()
