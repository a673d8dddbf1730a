"""Benchmark toolfsm's start-up against the import floor, measured side by side in one run.

    python benchmarks/startup.py            figures as text
    python benchmarks/startup.py --json     one JSON object: floor_ms and, per command, ms and
                                            ratio (to the floor) and target

The floor is `python -c "import pydantic, yaml, jsonschema"`: the libraries validation cannot
do without. Each command runs as a fresh process, rounds interleaved (floor, then every
command, again and again) so that a busy machine slows all of them alike; each figure is the
median of its rounds. Targets: `toolfsm --version` <= 0.6x the floor, `toolfsm validate
one.yaml` <= 1.3x.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE_FILE = """\
version: 1
agent: one
tools: [search, answer]
rules:
  - init: search
  - terminal: answer
"""

TARGETS = {"version": 0.6, "validate": 1.3}


def toolfsm_command() -> list[str]:
    """The installed `toolfsm` script beside this interpreter, else `python -m engine`."""
    script = Path(sys.executable).parent / "toolfsm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "engine"]


def commands(rule_file: Path) -> dict[str, list[str]]:
    toolfsm = toolfsm_command()
    return {
        "floor": [sys.executable, "-c", "import pydantic, yaml, jsonschema"],
        "python": [sys.executable, "-c", "pass"],
        "version": [*toolfsm, "--version"],
        "help": [*toolfsm, "--help"],
        "validate": [*toolfsm, "validate", str(rule_file)],
    }


def wall_ms(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-400:]}")
    return elapsed


def measure(rounds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        rule_file = Path(tmp) / "one.yaml"
        rule_file.write_text(ONE_FILE, encoding="utf-8")
        argvs = commands(rule_file)
        for argv in argvs.values():  # warm the file cache and the bytecode
            wall_ms(argv)
        samples: dict[str, list[float]] = {name: [] for name in argvs}
        for _ in range(rounds):
            for name, argv in argvs.items():
                samples[name].append(wall_ms(argv))
    floor = statistics.median(samples["floor"])
    figures: dict[str, object] = {"floor_ms": round(floor, 1), "rounds": rounds}
    for name, values in samples.items():
        if name == "floor":
            continue
        ms = statistics.median(values)
        entry: dict[str, object] = {"ms": round(ms, 1), "ratio": round(ms / floor, 2)}
        if name in TARGETS:
            entry["target"] = TARGETS[name]
            entry["met"] = ms / floor <= TARGETS[name]
        figures[name] = entry
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rounds", type=int, default=15, help="runs of each command")
    args = parser.parse_args()
    figures = measure(args.rounds)
    if args.json:
        print(json.dumps(figures))
        return
    print(f"floor (import pydantic, yaml, jsonschema): {figures['floor_ms']} ms")
    for name, entry in figures.items():
        if not isinstance(entry, dict):
            continue
        line = f"{name:>9}: {entry['ms']:7.1f} ms  {entry['ratio']:.2f}x the floor"
        if "target" in entry:
            line += f"  (target <= {entry['target']}x: {'met' if entry['met'] else 'MISSED'})"
        print(line)


if __name__ == "__main__":
    main()
