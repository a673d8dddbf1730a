"""Project-level promises: README's commands are what CI runs (the public API: test_public_api.py)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    head = readme.split("## ", 1)[0]  # the two commands stand before the first section
    return re.findall(r"```bash\n(?:#[^\n]*\n)?([^\n]+)\n```", head)


def test_readme_opens_with_the_two_fresh_machine_commands() -> None:
    commands = _readme_commands()
    assert len(commands) == 2, commands
    install_and_run, run_tests = commands
    assert "pip install" in install_and_run and "toolfsm run" in install_and_run
    assert run_tests.endswith("pytest")


def test_ci_runs_readmes_test_command_verbatim() -> None:
    run_tests = _readme_commands()[1]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert run_tests in ci_lines
