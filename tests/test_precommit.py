"""README's pre-commit snippet, run by real pre-commit against this repository at a commit, and
README's first command in a fresh venv: both install the light core (no LLM SDK, no
Hypothesis), and the hook environment stays under 90 MB.

Slow (each builds a virtual environment from the package index), so marked `slow`: the
default `pytest` deselects them and `.ci/run` runs them (`pytest -m slow`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent
HOOK_ENV_LIMIT_MB = 90
BAD = """\
version: 1
agent: broken
tools: [search, answer]
rules:
  - init: serch
"""
GOOD = BAD.replace("serch", "search")


def readme_snippet() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Validating rule files in CI", 1)[1].split("\n## ", 1)[0]
    (snippet,) = re.findall(r"```yaml\n(repos:\n.*?)```", section, re.S)
    return snippet


def git(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *map(str, args)], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A clone of this repository at HEAD, tagged as README's `rev:` names the release."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    rev = re.search(r"^\s+rev: (\S+)$", readme_snippet(), re.M)
    assert rev is not None
    assert rev.group(1) == f"v{version('toolfsm')}"  # the release tag of this version
    clone = tmp_path_factory.mktemp("release") / "toolfsm"
    git("clone", "--quiet", "--no-hardlinks", ROOT, clone, cwd=ROOT)
    # HEAD is what is tested: the tag is made, or moved there when the repository has the
    # release tag already (a clone copies it, pointing at the release commit).
    git("-c", "user.name=t", "-c", "user.email=t@t", "tag", "--force", rev.group(1), cwd=clone)
    return clone, rev.group(1)


def _size_mb(folder: Path) -> float:
    total = sum(f.lstat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())
    return total / 1e6


def test_readme_precommit_snippet_runs_the_hook(release: tuple[Path, str], tmp_path: Path) -> None:
    pytest.importorskip("pre_commit", reason="pre-commit is in the dev extra")
    clone, _ = release
    project = tmp_path / "project"
    (project / "rules").mkdir(parents=True)
    (project / "rules" / "agent.yaml").write_text(BAD, encoding="utf-8")
    (project / "notes.yaml").write_text("just: data\n", encoding="utf-8")  # not a rule file
    config = readme_snippet().replace("https://github.com/toolfsm/toolfsm", str(clone))
    (project / ".pre-commit-config.yaml").write_text(config, encoding="utf-8")
    git("init", "--quiet", cwd=project)
    git("add", ".", cwd=project)
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache"), "TOOLFSM_DB": ""}
    env.pop("VIRTUAL_ENV", None)

    def pre_commit() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pre_commit", "run", "--all-files", "--color", "never"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    failed = pre_commit()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "toolfsm validate" in failed.stdout and "Failed" in failed.stdout
    assert "rules/agent.yaml:5:11: error[E021]: " in failed.stdout
    (project / "rules" / "agent.yaml").write_text(GOOD, encoding="utf-8")
    passed = pre_commit()
    assert passed.returncode == 0, passed.stdout + passed.stderr

    (hook_env,) = (tmp_path / "cache").glob("repo*/py_env-*")
    installed = subprocess.run(
        [str(hook_env / "bin" / "python"), "-m", "pip", "list", "--format", "freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    for heavy in ("openai", "anthropic", "hypothesis"):
        assert f"\n{heavy}==" not in f"\n{installed}"
    size = _size_mb(hook_env)
    print(f"pre-commit hook environment: {size:.1f} MB, {len(installed.split())} packages")
    assert size < HOOK_ENV_LIMIT_MB


def test_readme_first_command_works_in_a_fresh_clone(release: tuple[Path, str]) -> None:
    clone, _ = release
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = re.findall(r"```bash\n(?:#[^\n]*\n)?([^\n]+)\n```", readme.split("## ", 1)[0])[0]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["TOOLFSM_DB"] = str(clone / "runs.db")
    done = subprocess.run(
        ["bash", "-c", first],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stopped: terminal_tool" in done.stdout
    installed = subprocess.run(
        [str(clone / ".venv" / "bin" / "python"), "-m", "pip", "list", "--format", "freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    for heavy in ("openai", "anthropic", "hypothesis"):
        assert f"\n{heavy}==" not in f"\n{installed}"
