"""Gating benchmark: µs per step, compile time of a big file, and `toolfsm validate` over 1,000 files.

    python benchmarks/gating.py          # figures, one per line
    python benchmarks/gating.py --json   # exactly one JSON object

A step is what the run loop does per tool call: `gate(position)` (read the allowed tools and
forcing), then `advance(position, tool, output)`. It is measured at run histories of 1, 100
and 1,000 calls to show it is flat: a position carries no history. Targets: <= 1 µs per step
(10 tools), <= 2 µs (200 tools, ~400 rules), compile of a 1,000-tool / 2,000-rule file
< 0.5 s, validate of 1,000 files < 3 s.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import compile_rules, parse_rules  # noqa: E402
from engine.language import spec  # noqa: E402
from engine.language.checks import check_spec  # noqa: E402
from engine.language.yamltree import parse_yaml  # noqa: E402
from engine.machine import Machine, Position  # noqa: E402

OUTPUTS = ["true", "2", "ok", "something else"]


def small_agent() -> dict[str, Any]:
    """A realistic 10-tool agent using every rule kind."""
    tools = [
        "plan",
        "search",
        "fetch",
        "read",
        "summarize",
        "cite",
        "note",
        "ask_user",
        "log",
        "answer",
    ]
    rules: list[dict[str, Any]] = [
        {"after": "search", "on_output": {True: "fetch", 2: "read"}, "default": "summarize"},
        {"after": "fetch", "allow": ["read", "summarize", "note"]},
        {"only_after": "read", "tools": "cite"},
        {"max_calls": 400, "tools": ["search", "fetch"]},
        {"continue": ["plan", "note"]},
        {"required_before_exit": "log"},
        {"requires_approval": "ask_user"},
        {"terminal": "answer"},
    ]
    return {"version": 1, "agent": "small", "tools": tools, "rules": rules}


def large_agent(n_tools: int = 200, scale: int = 1) -> dict[str, Any]:
    """A generated agent: with n_tools=200 about 400 rules of every kind, all valid together.

    Tools 0-39% have child rules (some two, intersecting), 40-49% conditional rules,
    50-69% are parents whose children (70-89%) may only follow them, 90-94% are terminal,
    95-99% required before exit; max_calls limits are spread over the first tools.
    """
    t = [f"tool_{i:04d}" for i in range(n_tools)]
    p = n_tools // 100  # tools per percent
    rules: list[dict[str, Any]] = []
    for i in range(40 * p):
        rules.append({"after": t[i], "allow": [t[i + 1], t[i + 2], t[i + 3]]})
        if i % 2 == 0:
            rules.append({"after": t[i], "allow": [t[i + 2], t[i + 3], t[i + 5]]})
    for i in range(40 * p, 50 * p):
        cases = {True: t[i + 1], 2: t[i + 2], "ok": t[(i + 3) % (40 * p)]}
        rules.append({"after": t[i], "on_output": cases, "default": t[i - 40 * p]})
    for j in range(20 * p):
        rules.append({"only_after": t[50 * p + j], "tools": [t[70 * p + j]]})
    for i in range(90 * p, 95 * p):
        rules.append({"terminal": t[i]})
    for i in range(95 * p, 100 * p):
        rules.append({"required_before_exit": t[i]})
    for i in range(50 * p, 90 * p):
        rules.append({"continue": t[i]})
    for i in range(0, 5 * p):
        rules.append({"requires_approval": t[70 * p + i]})
    m = 0
    while len(rules) < 2 * n_tools * scale:
        # Limits high enough that long benchmark runs rarely dead-end, a few that bind.
        limit = 3 + m if m % 10 == 0 else 2_000 + m
        rules.append({"max_calls": limit, "tools": [t[m % (40 * p)]]})
        m += 1
    return {"version": 1, "agent": f"large{n_tools}", "tools": t, "rules": rules}


def to_text(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False)


def compile_text(text: str, name: str) -> Machine:
    rule_file = parse_rules(text, name)
    if not rule_file.ok:
        problems = "\n".join(str(d) for d in rule_file.diagnostics[:10])
        raise SystemExit(f"generated file {name} is invalid:\n{problems}")
    return compile_rules(rule_file)


def walk(machine: Machine, length: int, seed: int = 7) -> list[tuple[Position, str, str]]:
    """A deterministic run of allowed calls, avoiding terminal tools (the run goes on).

    The history index is the step's place in the walk; after a dead end the walk restarts
    (rare: only max_calls limits can cause one).
    """
    rng = random.Random(seed)
    position = machine.start()
    steps = []
    for _ in range(length):
        allowed = machine.gate(position).allowed
        choices = [tool for tool in allowed if tool not in machine.terminal] or list(allowed)
        if not choices:  # a dead end stops the run: the next run starts afresh
            position = machine.start()
            allowed = machine.gate(position).allowed
            choices = [tool for tool in allowed if tool not in machine.terminal]
        tool = rng.choice(choices)
        output = rng.choice(OUTPUTS)
        steps.append((position, tool, output))
        position = machine.advance(position, tool, output)
    return steps


def per_step_us(machine: Machine, steps: list[tuple[Position, str, str]], rounds: int) -> float:
    """Mean µs for gate (allowed + force) then advance over `steps`: the best of 30 samples
    (the minimum filters out other processes on a shared machine)."""
    gate, advance = machine.gate, machine.advance
    best = float("inf")
    for _ in range(30):
        start = time.perf_counter()
        for _ in range(rounds):
            for position, tool, output in steps:
                g = gate(position)
                g.allowed, g.force  # noqa: B018 - what a run loop reads
                advance(position, tool, output)
        best = min(best, (time.perf_counter() - start) / (rounds * len(steps)))
    return best * 1e6


def step_figures(machine: Machine, histories: tuple[int, ...] = (1, 100, 1000)) -> dict[int, float]:
    window = 50
    steps = walk(machine, max(histories) + window)
    return {h: per_step_us(machine, steps[h : h + window], rounds=20) for h in histories}


def compile_figures(document: dict[str, Any]) -> dict[str, float]:
    text = to_text(document)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    data, source, _ = parse_yaml(text, "big.yaml")
    timings["compile_yaml_s"] = time.perf_counter() - start
    start = time.perf_counter()
    agent = spec.AgentSpec.model_validate(data)
    timings["compile_schema_s"] = time.perf_counter() - start
    start = time.perf_counter()
    check_spec(agent, source)
    timings["compile_checks_s"] = time.perf_counter() - start
    start = time.perf_counter()
    rule_file = parse_rules(text, "big.yaml")  # yaml + schema + checks, as users run it
    timings["compile_parse_s"] = time.perf_counter() - start
    assert rule_file.ok, [str(d) for d in rule_file.diagnostics[:5]]
    start = time.perf_counter()
    compile_rules(rule_file)
    timings["compile_build_s"] = time.perf_counter() - start
    timings["compile_s"] = timings["compile_parse_s"] + timings["compile_build_s"]
    return timings


def write_files(folder: Path, count: int) -> None:
    """A repository's worth of rule files: the small agent and the `rules/` library, renamed,
    rules shuffled; one file in 50 has an error (so validate must exit 1)."""
    library = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "rules").glob("*.yaml"))]
    templates = [small_agent(), *library]
    rng = random.Random(11)
    for i in range(count):
        document = json.loads(json.dumps(templates[i % len(templates)]))
        document["agent"] = f"agent-{i}"
        rng.shuffle(document["rules"])
        if i % 50 == 0:
            document["rules"].append({"after": "no_such_tool", "allow": "answer"})
        (folder / f"agent_{i:04d}.yaml").write_text(to_text(document))


def validate_figures(count: int = 1000) -> dict[str, float]:
    from engine.cli.rules import DiagnosticFormat, validate

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        write_files(folder, count)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(BaseException):
            validate([folder], DiagnosticFormat.json)  # raises typer.Exit with the exit code
        in_process = time.perf_counter() - start
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "engine", "validate", "--format", "json", str(folder)],
            capture_output=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        subprocess_s = time.perf_counter() - start
        if result.returncode != 1:  # the broken files must be found
            raise SystemExit(f"validate exited {result.returncode}: {result.stderr[-500:]!r}")
    return {"validate_1000_s": in_process, "validate_1000_subprocess_s": subprocess_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    small = compile_text(to_text(small_agent()), "small.yaml")
    large = compile_text(to_text(large_agent(200)), "large.yaml")
    small_steps = step_figures(small)
    large_steps = step_figures(large)
    figures: dict[str, Any] = {
        "small_us": small_steps[1],
        "small_us_h100": small_steps[100],
        "small_us_h1000": small_steps[1000],
        "large_us": large_steps[1],
        "large_us_h100": large_steps[100],
        "large_us_h1000": large_steps[1000],
        "large_rules": len(large.rules),
        "large_nodes": len(large.nodes),
    }
    big = large_agent(1000)
    figures["compile_rules"] = len(big["rules"])
    figures.update(compile_figures(big))
    figures.update(validate_figures(1000))
    figures["python"] = sys.version.split()[0]

    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"step, 10 tools:          {small_steps[1]:.2f} / {small_steps[100]:.2f} / "
        f"{small_steps[1000]:.2f} µs at history 1 / 100 / 1000 (target <= 1)"
    )
    print(
        f"step, 200 tools, {len(large.rules)} rules: {large_steps[1]:.2f} / "
        f"{large_steps[100]:.2f} / {large_steps[1000]:.2f} µs (target <= 2)"
    )
    print(
        f"compile 1000 tools / {figures['compile_rules']} rules: {figures['compile_s']:.3f} s "
        f"(yaml {figures['compile_yaml_s']:.3f}, schema {figures['compile_schema_s']:.3f}, "
        f"checks {figures['compile_checks_s']:.3f}, build {figures['compile_build_s']:.3f}; "
        "target < 0.5)"
    )
    print(
        f"validate 1000 files: {figures['validate_1000_s']:.2f} s in process, "
        f"{figures['validate_1000_subprocess_s']:.2f} s as `python -m engine validate` "
        "(target < 3)"
    )


if __name__ == "__main__":
    main()
