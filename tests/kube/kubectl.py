"""Running the real ``kubectl`` against a kubeconfig, for tests.

Every invocation gets ``--kubeconfig``, its own ``--cache-dir`` (discovery and
OpenAPI caches stay out of ``$HOME`` and never leak between servers) and a short
``--request-timeout``. ``watch()`` runs a long-lived command (``get --watch``) and
stops it by PID.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

__all__ = ["KUBECTL", "Kubectl", "KubectlError"]

KUBECTL = os.environ.get("KUBECTL") or shutil.which("kubectl") or "/usr/bin/kubectl"


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return (f"{' '.join(self.cmd)} exited {self.returncode}:\n"
                f"{self.stderr}{self.stdout}")


class Kubectl:
    """``kubectl(*args)`` → CompletedProcess (raises :class:`KubectlError` on a
    non-zero exit unless ``check=False``)."""

    def __init__(self, kubeconfig: str | Path, cache_dir: str | Path, *,
                 request_timeout: str = "5s", timeout: float = 20.0) -> None:
        self.base = [KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache_dir),
                     f"--request-timeout={request_timeout}"]
        self.timeout = timeout

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.base, *args], input=input, capture_output=True,
                              text=True, timeout=timeout or self.timeout)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, proc.args, proc.stdout, proc.stderr)
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)

    def yaml(self, *args: str) -> Any:
        return yaml.safe_load(self(*args, "-o", "yaml").stdout)

    @contextmanager
    def watch(self, *args: str) -> Iterator[WatchedOutput]:
        """Run a command that does not end by itself; stop it (by PID) on exit."""
        proc = subprocess.Popen([*self.base, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        out = WatchedOutput(proc)
        try:
            yield out
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stderr.close()  # type: ignore[union-attr]


class WatchedOutput:
    """Lines of a running command's stdout, read on a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: str, timeout: float = 5.0) -> str:
        """The next line matching ``pattern`` (a regex), or AssertionError."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in {timeout}s; saw {self.lines}")
