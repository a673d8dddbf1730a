"""`toolfsm graph` draws, and `toolfsm simulate` counts, only transitions a run can take
(issue 10, section 5): none out of a terminal tool's node where every run has stopped, none a
used-up max_calls limit forbids."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def toolfsm(*args: str | Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "engine", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def mermaid(path: str | Path) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """States (id -> label) and transitions (source label, trigger, dest label)."""
    text = toolfsm("graph", path)
    states = dict((m[2], m[1]) for m in re.finditer(r'state "([^"]*)" as (s\d+)', text))
    moves = [
        (states[m[1]], m[3], states[m[2]])
        for m in re.finditer(r"^\s+(s\d+) --> (s\d+): (.*)$", text, re.MULTILINE)
    ]
    return states, moves


def test_no_edge_leaves_a_terminal_tool_node() -> None:
    states, moves = mermaid("rules/screening.yaml")
    terminal = {label for label in states.values() if "(terminal" in label}
    assert terminal, states
    assert [m for m in moves if m[0] in terminal] == []
    dot = toolfsm("graph", "rules/screening.yaml", "--format", "dot")
    assert len(re.findall(r" -> .*\[label=", dot)) == len(moves) == 7
    report = json.loads(toolfsm("simulate", "rules/screening.yaml", "--runs", "300", "--json"))
    assert report["transitions"] == {"reached": 7, "total": 7, "never": []}


def test_a_used_up_max_calls_limit_removes_its_edge(tmp_path: Path) -> None:
    path = tmp_path / "once.yaml"
    path.write_text(
        "version: 1\nagent: once\ntools: [search]\nrules: [{max_calls: 1, tools: search}]\n"
    )
    _, moves = mermaid(path)
    assert moves == [("start", "search", "after search")]
    report = json.loads(toolfsm("simulate", path, "--runs", "20", "--json"))
    assert report["transitions"]["total"] == 1


def test_a_terminal_call_with_a_required_tool_pending_keeps_its_edges(tmp_path: Path) -> None:
    path = tmp_path / "log.yaml"
    path.write_text(
        "version: 1\nagent: log\ntools: [answer, log]\n"
        "rules: [{terminal: answer}, {required_before_exit: log}]\n"
    )
    _, moves = mermaid(path)
    assert ("after answer (terminal)", "log", "after log") in moves
    report = json.loads(toolfsm("simulate", path, "--runs", "300", "--json"))
    assert report["transitions"]["never"] == []
