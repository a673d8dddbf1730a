"""The README's first command and its "A 5-minute tour" work verbatim on a fresh checkout.

Every `toolfsm ...` line of the tour's bash blocks (and of the first command block at the
top, minus the venv/pip part) runs from the repository root as `python -m engine ...`, in
order, against a throwaway SQLite store; the tour's Python block runs too, and its error
example is reproduced from its YAML example. A line that needs an API key (`VAR=... toolfsm`)
runs without the key and must stop with a one-line error naming the variable.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")

SETUP = re.compile(r"^(python3? -m venv|\.venv/bin/pip |source \.venv/bin/activate|pip )")
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def _commands(block: str) -> list[str]:
    """The block's command lines: comments and setup (venv, pip, activate) dropped."""
    commands = []
    for line in block.splitlines():
        for part in line.split("&&"):
            part = part.strip()
            if part and not part.startswith("#") and not SETUP.match(part):
                commands.append(part)
    return commands


def tour_commands() -> list[str]:
    top = README[: README.index("\n## ")]
    first = _commands(_blocks(top, "bash")[0])
    assert first, "the first command block has no toolfsm command"
    tour = [c for b in _blocks(_section("A 5-minute tour"), "bash") for c in _commands(b)]
    return [c.replace(".venv/bin/toolfsm", "toolfsm", 1) for c in first] + tour


def _env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(TOOLFSM_DB=str(db), COLUMNS="200", NO_COLOR="1", TERM="dumb")
    return env


def _run(words: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert words[0] == "toolfsm", f"not a toolfsm command: {words}"
    return subprocess.run(
        [sys.executable, "-m", "engine", *words[1:]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tour_lists_the_commands_a_new_user_needs() -> None:
    commands = tour_commands()
    assert commands[0] == "toolfsm run examples/screening/agent.yaml"
    verbs = [shlex.split(c, comments=True) for c in commands]
    heads = {tuple(w for w in ws if not ENV_ASSIGNMENT.match(w))[:2] for ws in verbs}
    for needed in [("toolfsm", "validate"), ("toolfsm", "trace"), ("toolfsm", "run")]:
        assert needed in heads, f"the tour has no {' '.join(needed)} line"
    assert any("--model" in ws for ws in verbs), "the tour does not show a real model"


def test_every_tour_command_works_verbatim(tmp_path: Path) -> None:
    env = _env(tmp_path / "runs.db")
    for command in tour_commands():
        words = shlex.split(command, comments=True)
        assert not {"|", ">", "<", ";", "&"} & set(words), f"shell syntax in {command!r}"
        assignments = [w for w in words if ENV_ASSIGNMENT.match(w)]
        words = words[len(assignments) :]
        proc = _run(words, env)
        where = f"{command!r} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, where
        if any(a.endswith("=...") for a in assignments):
            # A placeholder API key: without it the command must stop cleanly, naming it.
            assert proc.returncode == 2, where
            for name in (a.split("=")[0] for a in assignments):
                assert name in " ".join(proc.stderr.split()), where
            continue
        assert proc.returncode == 0, where
        _check_output(words, proc.stdout, proc.stderr, where)


def _check_output(words: list[str], out: str, err: str, where: str) -> None:
    """What each kind of tour command must print, beyond its exit code."""
    verb = words[1:3]
    if verb[0] == "validate":
        assert re.search(r"\d+ file\(s\) checked: 0 error\(s\)", err + out), where
    elif verb[0] == "graph":
        assert out.startswith("stateDiagram-v2"), where
    elif verb[0] == "trace" and "--json" in words:
        rows = json.loads(out)
        # "a violation": a deliberate violation is reported in the trace, not as a failure.
        assert any(row.get("violation") for row in rows), where
    elif verb[0] == "trace":
        assert "stop (terminal_tool)" in out, where
    elif verb[0] == "explain":
        assert "NOT allowed" in out and "rules/screening.yaml:" in out, where
    elif verb[0] == "run":
        assert re.search(r"^stopped: (terminal_tool|awaiting_approval) ", out, re.M), where
        assert out.startswith("store: sqlite:///"), where
    elif verb == ["runs", "list"]:
        assert "agent" in out and "status" in out, where
    elif verb == ["runs", "show"]:
        assert out.startswith("run "), where


def test_the_tour_python_block_runs(tmp_path: Path) -> None:
    (python,) = _blocks(_section("A 5-minute tour"), "python")
    proc = subprocess.run(
        [sys.executable, "-c", python],
        cwd=REPO,
        env=_env(tmp_path / "runs.db"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "send_email is NOT allowed" in proc.stdout


def test_the_tour_error_example_is_what_validate_prints(tmp_path: Path) -> None:
    tour = _section("A 5-minute tour")
    (example,) = _blocks(tour, "yaml")
    (error,) = _blocks(tour, "text")
    found = re.match(r"agent\.yaml:(\d+):(\d+): .*rule names tool '(\w+)'", error)
    fix = re.search(r"did you mean '(\w+)'", error)
    assert found and fix, error
    # The example file, misspelt where the error points.
    line, col, typo = int(found.group(1)), int(found.group(2)), found.group(3)
    lines = example.splitlines()
    text = lines[line - 1]
    assert text[col - 1 :].startswith(fix.group(1)), f"line {line}:{col} is {text!r}"
    lines[line - 1] = text[: col - 1] + typo + text[col - 1 + len(fix.group(1)) :]
    (tmp_path / "agent.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "validate", "agent.yaml"],
        cwd=tmp_path,
        env=_env(tmp_path / "runs.db"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == error, proc.stdout
