"""deploy/Dockerfile, checked without Docker (there is none on these machines, so the
image is not built here): a non-root numeric USER that is the Deployment's runAsUser,
``ENTRYPOINT ["meshctl"]``, ``pip install .[kubernetes]``; and the files it COPYs
really build the package (a wheel, built from exactly those files)."""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.deploy.manifests import CONTROL_PLANE, DEPLOY, ROOT, container, find, render

DOCKERFILE = DEPLOY / "Dockerfile"
IGNORE = DEPLOY / "Dockerfile.dockerignore"

Instruction = tuple[str, str]  # (INSTRUCTION, its arguments)


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, rest = whole.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, "a continuation line at the end"
    return out


def stages(parsed: list[Instruction]) -> list[list[Instruction]]:
    """Instructions by build stage (each starting with its FROM); global ARGs first."""
    out: list[list[Instruction]] = [[]]
    for instruction in parsed:
        if instruction[0] == "FROM":
            out.append([])
        out[-1].append(instruction)
    return out


PARSED = instructions(DOCKERFILE.read_text())
GLOBAL, *STAGES = stages(PARSED)
BUILD, FINAL = STAGES


def args_of(stage: list[Instruction], keyword: str) -> list[str]:
    return [rest for kw, rest in stage if kw == keyword]


def resolve(value: str) -> str:
    """``${NAME}`` from the global ARG defaults."""
    for arg in args_of(GLOBAL, "ARG"):
        name, _, default = arg.partition("=")
        value = value.replace(f"${{{name}}}", default)
    return value


def test_base_image_is_python_3_11_slim() -> None:
    for stage in STAGES:
        image = resolve(args_of(stage, "FROM")[0].split()[0])
        assert image.startswith("python:3.11-slim"), image


def test_runs_as_the_deployments_non_root_numeric_user() -> None:
    users = args_of(FINAL, "USER")
    assert users, "the image must not run as root"
    user = users[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit(), f"USER {user}: numeric, so runAsNonRoot works"
    assert int(uid) != 0 and int(gid) != 0
    # Nothing after the last USER switches back to root.
    last = max(i for i, (kw, _) in enumerate(FINAL) if kw == "USER")
    assert all(kw not in ("USER", "RUN") for kw, _ in FINAL[last + 1:])
    pod = find(render("base"), "Deployment", CONTROL_PLANE)["spec"]["template"]["spec"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(uid), int(gid))
    # The user exists in the image with that uid (a name for logs and ps).
    (run,) = [r for r in args_of(FINAL, "RUN") if "useradd" in r]
    words = shlex.split(run)
    assert words[words.index("--uid") + 1] == uid and words[words.index("--gid") + 1] == gid


def test_entrypoint_is_meshctl() -> None:
    (entrypoint,) = args_of(FINAL, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["meshctl"]  # exec form: meshctl gets the signals
    deployment = find(render("base"), "Deployment", CONTROL_PLANE)
    assert "command" not in container(deployment)  # the Deployment gives args only
    env = " ".join(args_of(FINAL, "ENV"))
    assert "PATH=/opt/meshlib/bin:" in env and "PYTHONDONTWRITEBYTECODE=1" in env


def test_installs_the_package_with_its_kubernetes_extra() -> None:
    (install,) = [r for r in args_of(BUILD, "RUN") if "pip install" in r]
    assert '".[kubernetes]"' in install
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'kubernetes = ["kubernetes>=' in pyproject
    assert any(r.startswith("--from=build /opt/meshlib") for r in args_of(FINAL, "COPY"))


def copied_sources() -> list[str]:
    """What the build stage COPYs from the build context."""
    out = []
    for copy in args_of(BUILD, "COPY"):
        *sources, _ = shlex.split(copy)
        assert not any(s.startswith("--") for s in sources), copy
        out += sources
    return out


def test_the_dockerignore_keeps_what_is_copied() -> None:
    patterns = [line.strip() for line in IGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for source in copied_sources():
        parts = Path(source).parts
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        assert not any(fnmatch.fnmatch(p, pattern) for p in prefixes for pattern in patterns), \
            source


def test_the_copied_files_build_the_package(tmp_path: Path) -> None:
    """A wheel built from exactly the files the Dockerfile COPYs (symlinks kept, as
    COPY keeps them) has meshctl, the demo config and the kubernetes extra."""
    context = tmp_path / "src"
    for source in copied_sources():
        target = context / source
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / source, target)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(tmp_path / "dist"), str(context)],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("meshlib-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        meta = archive.read(metadata).decode()
        scripts = archive.read(entry_points).decode()
    assert "meshctl = meshctl.cli:main" in scripts
    assert "Provides-Extra: kubernetes" in meta
    assert any(n.startswith("meshctl/demo_mesh/") and n.endswith(".yaml") for n in names)
    for package in ("meshlib", "interceptors", "xds_server", "meshctl"):
        assert f"{package}/__init__.py" in names
