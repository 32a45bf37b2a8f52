"""docs/security.md's token-digest command works when pasted into bash, and the CA
accepts the digest it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from xds_server.ca import StaticTokens

DOC = Path(__file__).resolve().parents[3] / "docs" / "security.md"


def digest_command() -> str:
    """The one ```bash block of the bootstrap-tokens section that hashes a token."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    (block,) = [b for b in blocks if "sha256" in b]
    return "\n".join(line.strip() for line in block.splitlines() if line.strip())


def run_in_bash(command: str, cwd: Path) -> str:
    """``command`` as bash runs it, with this interpreter first on PATH as python3."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_documented_digest_command_runs_in_bash_and_the_ca_accepts_it(tmp_path):
    command = digest_command()
    assert "\n" not in command, "one line, so it pastes"
    (tmp_path / "token.txt").write_text("a-bootstrap-token-for-frontend\n")
    digest = run_in_bash(command, tmp_path).strip()
    assert re.fullmatch(r"[0-9a-f]{64}", digest), digest
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(f"tokens:\n  - serviceAccount: default/frontend\n    sha256: {digest}\n")
    tokens.chmod(0o600)
    caller = StaticTokens.from_file(tokens).authenticate("a-bootstrap-token-for-frontend")
    assert caller.service_accounts == ("default/frontend",)


def test_the_example_digest_in_the_doc_is_of_the_token_test(tmp_path):
    (tmp_path / "token.txt").write_text("test")
    assert run_in_bash(digest_command(), tmp_path).strip() in DOC.read_text()
