"""The control plane's log tells when a rejected config is accepted again."""

from __future__ import annotations

import asyncio
import logging

from xds_server.control_plane import ControlPlaneOptions, run

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  ports: [{name: grpc, port: 50051, appProtocol: grpc}]
"""


async def wait_for_log(caplog, text: str, timeout: float = 10.0) -> logging.LogRecord:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for record in caplog.records:
            if text in record.getMessage():
                return record
        await asyncio.sleep(0.02)
    raise AssertionError(f"no log line with {text!r}: {caplog.text}")


async def test_a_valid_config_after_a_rejected_one_is_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="xds_server")
    config = tmp_path / "mesh"
    config.mkdir()
    (config / "reviews.yaml").write_text(SERVICE)
    stop = asyncio.Event()
    task = asyncio.create_task(run(ControlPlaneOptions(
        config=config, xds_address=("127.0.0.1", 0), insecure=True, stop=stop)))
    try:
        await wait_for_log(caplog, "xDS (ADS) serving")
        await asyncio.sleep(0.2)  # the watch is up
        (config / "broken.yaml").write_text("kind: [\n")
        await wait_for_log(caplog, "config rejected")
        assert "config valid again" not in caplog.text
        (config / "broken.yaml").unlink()
        record = await wait_for_log(caplog, "config valid again")
        assert record.levelno == logging.WARNING
        message = record.getMessage()
        assert "1 Service" in message and "problem(s) reported before are resolved" in message
        assert "version " in message
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert caplog.text.count("config valid again") == 1
