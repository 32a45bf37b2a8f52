"""Packaging hygiene: metadata current build tools accept without warnings."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_expression_and_setuptools_supports_it():
    """A ``license = {text = ...}`` table makes setuptools warn on every install;
    the SPDX string needs setuptools >= 77 (PEP 639)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    (setuptools,) = [r for r in pyproject["build-system"]["requires"]
                     if r.startswith("setuptools")]
    assert setuptools == "setuptools>=77"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_quick_start_bootstrap_is_ignored_by_git():
    out = subprocess.run(["git", "check-ignore", "-q", "bootstrap.json"], cwd=ROOT)
    assert out.returncode == 0
