"""Every rule file under examples/ and rules/ validates and checks clean: no error, no warning."""

from __future__ import annotations

import re

from _example_cli import REPO, Cli


def test_every_rule_file_in_examples_and_rules_is_clean(cli: Cli) -> None:
    proc = cli("validate", "examples/", "rules/")
    # (examples/review/ holds its reviewers' agent files in folders of their own)
    agents = sorted(REPO.glob("examples/**/agent.yaml"))
    rule_files = sorted(REPO.glob("rules/*.yaml")) + sorted(REPO.glob("rules/*.yml"))
    assert len(agents) >= 3 and rule_files
    summary = re.search(
        r"(\d+) file\(s\) checked: (\d+) error\(s\), (\d+) warning\(s\)", proc.stderr + proc.stdout
    )
    assert summary, proc.stderr + proc.stdout
    # Every agent and rule file was taken as a rule file (scripts beside them are not).
    assert summary.groups() == (str(len(agents) + len(rule_files)), "0", "0")


def test_every_rule_file_passes_the_state_checks(cli: Cli) -> None:
    # Dead ends, traps, unreachable tools: none in the shipped agents and rule library.
    proc = cli("check", "examples/", "rules/")
    summary = re.search(r"(\d+) error\(s\), (\d+) warning\(s\)", proc.stderr + proc.stdout)
    assert summary and summary.groups() == ("0", "0"), proc.stderr + proc.stdout


def test_every_example_is_complete() -> None:
    for folder in sorted(p for p in (REPO / "examples").iterdir() if p.is_dir()):
        for name in ("agent.yaml", "tools.py", "script.yaml", "README.md"):
            assert (folder / name).is_file(), f"{folder.name}/ has no {name}"
        readme = (folder / "README.md").read_text(encoding="utf-8")
        # The one offline command, and the way to a real model.
        assert f"toolfsm run examples/{folder.name}/agent.yaml\n" in readme
        assert "--model openai:" in readme and "--base-url" in readme
