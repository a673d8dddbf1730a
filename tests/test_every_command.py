"""Every command on every shipped rule file, in real subprocesses (issue 10, section 4).

`rules/*.yaml` and `examples/*/agent.yaml` are what a user tries first; each command must
finish on each of them with one of its documented exit codes and never with a traceback.
The commands run two at a time (independent processes, each with its own output), so the
whole matrix stays within a few seconds of wall time per file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from engine import compile_rules, load_rules

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(
    [*(REPO / "rules").glob("*.yaml"), *(REPO / "examples").glob("*/agent.yaml")],
)
SEEDS = (1, 2, 7)


def _commands(path: Path) -> list[tuple[tuple[str, ...], frozenset[int]]]:
    """(arguments, documented exit codes) of every command on one rule file."""
    rel = str(path.relative_to(REPO))
    machine = compile_rules(load_rules(path))
    first = machine.gate(machine.start()).allowed or machine.tools
    ok, found = frozenset({0}), frozenset({0, 1})  # 1: errors found / lossy, as documented
    commands: list[tuple[tuple[str, ...], frozenset[int]]] = [
        (("validate", rel, "--format", "json"), ok),
        (("check", rel), found),
        (("graph", rel), ok),
        (("graph", rel, "--format", "dot"), ok),
        (("trace", rel, first[0], machine.tools[-1]), ok),
        (("explain", rel, machine.tools[-1], first[0]), ok),
        (("export", rel, "--letta"), found),
        (("export", rel, "--letta", "--agent-json"), found),
        # The text report (its own rendering code), then JSON reports for more seeds.
        (("simulate", rel, "--runs", "40", "--seed", "0", "--no-progress"), ok),
    ]
    for seed in SEEDS:
        commands.append((("simulate", rel, "--runs", "40", "--seed", str(seed), "--json"), ok))
    tools = path.parent / "tools.py"
    if tools.is_file():
        module = str(tools.relative_to(REPO))
        for seed in SEEDS[:2]:
            args = ("simulate", rel, "--runs", "15", "--seed", str(seed), "--json")
            commands.append(((*args, "--tools", module), ok))
    return commands


def _run(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(COLUMNS="200", NO_COLOR="1", TERM="dumb")
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_shipped_rule_files_are_found() -> None:
    names = {p.relative_to(REPO).as_posix() for p in SHIPPED}
    assert {"rules/support.yaml", "examples/support/agent.yaml"} <= names
    assert len(SHIPPED) >= 6


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_command_finishes_with_a_documented_exit_code(path: Path) -> None:
    commands = _commands(path)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_run, [args for args, _ in commands]))
    problems = []
    for (args, codes), proc in zip(commands, results, strict=True):
        output = proc.stdout + proc.stderr
        if proc.returncode not in codes or "Traceback" in output:
            problems.append(
                f"toolfsm {' '.join(args)} exited {proc.returncode} (documented: {sorted(codes)})"
                f"\n{output[-2000:]}"
            )
        elif "--json" in args and args[0] == "simulate":
            report = json.loads(proc.stdout)
            assert sum(report["stop_reasons"].values()) == report["runs"], args
    assert not problems, "\n\n".join(problems)
