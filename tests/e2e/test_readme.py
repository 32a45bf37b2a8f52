"""The README's "Five minutes with meshlib", run as printed: every shell block in order
in one bash (its ``&`` jobs included), every Python block saved under the file name its
first line gives. Run in a scratch directory that has the repository's ``.venv`` and
``examples``, on the fixed ports the README names."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT

SECTION = "## Five minutes with meshlib"
GET = "/demo.Reviews/Get"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def section_blocks(readme: str) -> list[tuple[str, str]]:
    """``(language, code)`` of each fenced block of the section, in order."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    return FENCE.findall(readme[start:end if end != -1 else None])


def as_script(blocks: list[tuple[str, str]]) -> str:
    lines = ["set -eo pipefail"]
    for language, code in blocks:
        if language == "python":
            name = code.splitlines()[0].lstrip("# ").strip()
            assert name.endswith(".py"), f"a Python block must start with '# <file>.py': {code!r}"
            lines.append(f"cat > {name} <<'PYTHON'\n{code}PYTHON")
        else:
            assert language == "sh", language
            lines.append(code)
    return "\n".join(lines) + "\n"


def test_the_five_minute_path_runs_as_printed(tmp_path: Path):
    blocks = section_blocks((ROOT / "README.md").read_text())
    assert [lang for lang, _ in blocks].count("sh") >= 3
    for name in (".venv", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    script = tmp_path / "five-minutes.sh"
    script.write_text(as_script(blocks))
    log = tmp_path / "output.txt"
    with log.open("w") as output:
        proc = subprocess.Popen(["bash", str(script)], cwd=tmp_path, stdout=output,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={k: v for k, v in os.environ.items()
                                     if k not in ("VIRTUAL_ENV", "PYTHONPATH")})
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the README path hung:\n{log.read_text()}")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything the README left running
    out = log.read_text()
    assert proc.returncode == 0, out
    assert "my-mesh: ok" in out
    assert re.search(r"^reviews-v[12]-[ab]$", out, re.M), out  # hello.py
    splits = re.findall(r"^\s*meshlib \| reviews-v1:\s*([\d.]+)%", out, re.M)
    assert splits and float(splits[0]) > 75 and 35 < float(splits[-1]) < 65, out
    assert re.search(r"^\s*native \| reviews-v1", out, re.M), out
    assert re.search(r"^1 passed", out, re.M), out


def test_the_serving_example_runs_as_printed(tmp_path: Path, control_plane_factory):
    """README "Serving in the mesh": the block, run as a script, serves on 50061 what
    the control plane (the shipped config, on the README's 15010) says."""
    import grpc

    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Serving in the mesh")
    ((language, code),) = FENCE.findall(readme[start:readme.index("\n## ", start + 1)])
    assert language == "python"
    control_plane_factory(ROOT / "examples" / "mesh", xds_port=15010)
    script = tmp_path / "serve.py"
    script.write_text(code)
    with (tmp_path / "serve.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, str(script)], stdout=log,
                                stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        with grpc.insecure_channel("127.0.0.1:50061") as channel:
            get = channel.unary_unary(GET)
            assert get(b"", timeout=20, wait_for_ready=True) == b"reviews-v1-a"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
