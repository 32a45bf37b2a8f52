"""`meshctl demo` as a new user runs it: short output, a clean stop on Ctrl-C or SIGTERM,
a clear refusal when a backend port is taken, and it works from an installed wheel."""

from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import ROOT, free_port

BACKEND_PORTS = (50061, 50062, 50063)
DEMO = [sys.executable, "-m", "meshctl", "demo"]


def port_free(port: int) -> bool:
    """Nobody listens on 127.0.0.1:port (TIME_WAIT leftovers do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def config_on_free_ports(tmp_path: Path) -> tuple[Path, list[int]]:
    """examples/mesh with the backends on free ports, and those ports: the tests do not
    need 50061-50063 (another demo, or someone's server, may hold them)."""
    config = tmp_path / "mesh"
    shutil.copytree(ROOT / "examples" / "mesh", config)
    services = config / "services.yaml"
    text, ports = services.read_text(), [free_port() for _ in BACKEND_PORTS]
    for fixed, port in zip(BACKEND_PORTS, ports, strict=True):
        text = text.replace(f"port: {fixed}", f"port: {port}")
    services.write_text(text)
    return config, ports


class Demo:
    """``meshctl demo`` in a session of its own, as a terminal runs it; its temporary
    directory goes under ``tmp``."""

    def __init__(self, tmp: Path, *args: str, cmd: list[str] = DEMO, cwd: Path = ROOT,
                 env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        tmp.mkdir(exist_ok=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.traffic = threading.Event()
        self.proc = subprocess.Popen(
            [*cmd, *args], cwd=cwd, text=True, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
            env={**os.environ, "TMPDIR": str(tmp), **(env or {})})
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout)),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))
            if "meshlib |" in line:
                self.traffic.set()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            for reader in self._readers:
                reader.join(timeout=5)

    @property
    def output(self) -> str:
        return "\n".join(self.stdout) + "\n--- stderr\n" + "\n".join(self.stderr)

    def lines(self, label: str) -> list[str]:
        return [line for line in self.stdout if f"{label} |" in line]


def assert_short_and_complete(demo: Demo) -> None:
    assert demo.wait(timeout=60) == 0, demo.output
    meshlib, native = demo.lines("meshlib"), demo.lines("native")
    assert len(meshlib) >= 2 and len(native) >= 2, demo.output
    assert any("editing routes.yaml" in line for line in demo.stdout), demo.output
    assert any("meshlib_xds_pushes_total" in line for line in demo.stdout), demo.output
    assert not [line for line in demo.stdout if line.startswith("{")], demo.output
    assert len(demo.stdout) <= 50 and len(demo.stderr) == 0, demo.output
    assert list(demo.tmp.iterdir()) == []  # its temporary directory is gone


def test_demo_output_is_the_summary_and_the_split_follows_the_edit(tmp_path):
    config, _ = config_on_free_ports(tmp_path)
    demo = Demo(tmp_path / "tmp", "--seconds", "4", "--config", str(config))
    assert_short_and_complete(demo)
    assert "0 errors so far" in demo.lines("meshlib")[-1], demo.output
    assert "reviews-v2:  " in demo.lines("meshlib")[-1], demo.output


def test_access_logs_flag_turns_them_on_for_the_run(tmp_path):
    demo = Demo(tmp_path / "tmp", "--seconds", "2", "--access-logs",
                "--config", str(config_on_free_ports(tmp_path)[0]))
    assert demo.wait(timeout=60) == 0, demo.output
    logs = [line for line in demo.stdout if line.startswith('{"time"')]
    assert len(logs) > 50, demo.output
    assert '"kind":"client"' in logs[-1]


@pytest.mark.parametrize(("sig", "status", "to_group"), [
    (signal.SIGINT, 130, True),     # Ctrl-C: a terminal signals the whole process group
    (signal.SIGTERM, 143, False),   # kill -TERM <demo pid>: the demo alone
    (signal.SIGHUP, 129, False),    # the terminal closed
], ids=["SIGINT-to-group", "SIGTERM-to-demo", "SIGHUP-to-demo"])
def test_a_signal_stops_everything_within_two_seconds(tmp_path, sig, status, to_group):
    config, ports = config_on_free_ports(tmp_path)
    demo = Demo(tmp_path / "tmp", "--seconds", "60", "--config", str(config))
    assert demo.traffic.wait(timeout=30), demo.output
    children = psutil.Process(demo.proc.pid).children(recursive=True)
    assert len(children) == 6, children  # control plane, 3 backends, 2 clients
    started = time.monotonic()
    if to_group:
        os.killpg(demo.proc.pid, sig)
    else:
        demo.proc.send_signal(sig)
    returncode = demo.wait(timeout=10)
    stopped = time.monotonic() - started
    assert stopped < 2.0, f"{stopped:.2f} s\n{demo.output}"
    assert returncode == status, demo.output
    assert [c for c in children if c.is_running()] == []
    assert all(port_free(port) for port in ports)
    assert list(demo.tmp.iterdir()) == []
    assert "Traceback" not in demo.output, demo.output
    assert demo.stderr == [f"meshctl demo: stopped by {sig.name}"], demo.output


def assert_refused_naming_50061(tmp: Path, **kwargs) -> None:
    """The built-in config's first backend port taken: exit 1, one line naming it."""
    with socket.socket() as holder:  # a plain socket: no SO_REUSEPORT, no SO_REUSEADDR
        with contextlib.suppress(OSError):  # else someone else holds it: just as good
            holder.bind(("127.0.0.1", 50061))
            holder.listen()
        demo = Demo(tmp, "--seconds", "4", **kwargs)
        assert demo.wait(timeout=30) == 1, demo.output
    assert demo.stdout == [] and len(demo.stderr) == 1, demo.output
    assert "port 50061" in demo.stderr[0] and "in use" in demo.stderr[0], demo.output
    assert list(demo.tmp.iterdir()) == []


def test_a_taken_backend_port_is_refused_naming_it(tmp_path):
    assert_refused_naming_50061(tmp_path / "tmp")


def test_the_packaged_demo_config_is_examples_mesh():
    packaged = ROOT / "meshctl" / "demo_mesh"
    assert packaged.resolve() == (ROOT / "examples" / "mesh").resolve()
    names = sorted(p.name for p in (ROOT / "examples" / "mesh").glob("*.yaml"))
    assert filecmp.cmpfiles(packaged, ROOT / "examples" / "mesh", names, shallow=False)[0] \
        == names


def test_demo_runs_from_an_installed_wheel(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__")
    for package in ("meshlib", "interceptors", "xds_server", "meshctl", "examples/mesh"):
        shutil.copytree(ROOT / package, src / package, symlinks=True, ignore=ignore)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True,
                   timeout=120)
    (wheel,) = (tmp_path / "dist").glob("meshlib-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=120)
    elsewhere = tmp_path / "elsewhere"  # no source tree here: -P keeps cwd off sys.path
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-P", "-c", "import importlib.util as u, meshctl, meshlib, xds_server;"
         "print(meshctl.__file__, meshlib.__file__, xds_server.__file__,"
         " u.find_spec('examples'))"],
        cwd=elsewhere, env={**os.environ, **env}, capture_output=True, text=True, check=True)
    *files, examples = where.stdout.split()
    assert all(f.startswith(str(site)) for f in files), where.stdout
    assert examples == "None", where.stdout
    installed = {"cmd": [sys.executable, "-P", *DEMO[1:]], "cwd": elsewhere, "env": env}
    # The built-in config comes from the wheel: it names the port it cannot have.
    assert_refused_naming_50061(tmp_path / "tmp", **installed)
    config, _ = config_on_free_ports(tmp_path)
    demo = Demo(tmp_path / "tmp", "--seconds", "3", "--config", str(config), **installed)
    assert_short_and_complete(demo)
