"""Keys of different YAML types are different keys, and a boolean is not a count (issue 10,
section 5): Python's `True == 1 == 1.0` must not leak into the rule language."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine import compile_rules, load_rules

REPO = Path(__file__).resolve().parents[1]


def toolfsm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_true_and_1_are_two_output_cases(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "version: 1\nagent: a\ntools: [check, a, b, c, other]\nrules:\n"
        "  - after: check\n    on_output: {true: a, 1: b, 0.5: c}\n    default: other\n",
    )
    result = toolfsm("validate", path)
    assert result.returncode == 0, result.stdout + result.stderr
    rule = load_rules(path).spec.rules[0]
    assert len(rule.on_output) == 3
    rows = json.loads(toolfsm("trace", path, "check=TRUE", "--json").stdout)
    assert rows[-1]["allowed"] == ["a"]
    rows = json.loads(toolfsm("trace", path, "check=1.0", "--json").stdout)
    assert rows[-1]["allowed"] == ["b"]
    machine = compile_rules(load_rules(path))
    start = machine.start()
    assert machine.gate(machine.advance(start, "check", True)).allowed == ("a",)
    assert machine.gate(machine.advance(start, "check", 1)).allowed == ("b",)
    assert machine.gate(machine.advance(start, "check", 0.5)).allowed == ("c",)


def test_a_shadowed_typed_case_is_located_at_its_own_key(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "version: 1\nagent: a\ntools: [check, a, b]\nrules:\n"
        "  - after: check\n    on_output: {1: a, 1.0: b}\n    default: a\n",
    )
    result = toolfsm("check", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{path}:6:23: warning[C104]: case 1.0 can never be chosen" in result.stdout


@pytest.mark.parametrize(
    "mapping", ["{1: a, 1: b}", "{true: a, true: b}", "{a: a, a: b}", "{0.5: a, 0.50: b}"]
)
def test_keys_of_one_type_and_value_are_still_duplicates(tmp_path: Path, mapping: str) -> None:
    path = _write(
        tmp_path,
        f"version: 1\nagent: a\ntools: [check, a, b]\nrules:\n"
        f"  - after: check\n    on_output: {mapping}\n",
    )
    result = toolfsm("validate", path)
    assert result.returncode == 1
    assert "error[E004]: duplicate key" in result.stdout


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("rules:\n  - max_calls: true\n    tools: a\n", "5:16"),
        ("expect:\n  - at_most: false\n    tools: a\n", "5:14"),
        ("run: {max_steps: true}\n", "4:18"),
    ],
)
def test_a_boolean_is_not_a_count(tmp_path: Path, text: str, where: str) -> None:
    path = _write(tmp_path, f"version: 1\nagent: a\ntools: [a, b]\n{text}")
    result = toolfsm("validate", path)
    assert result.returncode == 1, result.stdout
    assert f"{path}:{where}: error[E010]: expected a whole number, got the boolean" in (
        result.stdout
    )
