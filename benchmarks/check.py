"""Benchmark `toolfsm check`: exploration speed (states/s) and the time to check each rule file.

    python benchmarks/check.py            figures as text
    python benchmarks/check.py --json     one JSON object: states_per_s, max_file_ms, files

The state-space figure comes from a generated agent whose max_calls counters and
required-before-exit flags multiply into ~10^5 positions; the per-file figures are the best
of several full checks (read, validate, compile, explore, find, assertions) of each file in
rules/ and examples/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.analysis import check_path, explore  # noqa: E402
from engine.cli.rules import collect_rule_files  # noqa: E402
from engine.language.loader import parse_rules  # noqa: E402
from engine.machine.compiler import compile_rules  # noqa: E402


def synthetic_agent() -> str:
    tools = [f"tool{i}" for i in range(10)]
    rules = [
        "  - init: tool0",
        "  - after: tool1\n    on_output: {true: tool2, false: tool3}\n    default: tool4",
        "  - after: tool5\n    allow: [tool6, tool7, tool8]",
        "  - max_calls: 3\n    tools: [tool0, tool2, tool3, tool6, tool7]",
        "  - terminal: tool9",
        "  - required_before_exit: [tool4, tool8, tool5]",
    ]
    return (
        f"version: 1\nagent: synthetic\ntools: [{', '.join(tools)}]\nrules:\n"
        + "\n".join(rules)
        + "\n"
    )


def states_per_second(rounds: int = 7) -> tuple[float, int]:
    machine = compile_rules(parse_rules(synthetic_agent(), "synthetic.yaml"))
    best = float("inf")
    size = 0
    for _ in range(rounds):
        started = time.perf_counter()
        graph = explore(machine, max_states=2_000_000)
        best = min(best, time.perf_counter() - started)
        size = len(graph)
    return size / best, size


def file_times(rounds: int = 5) -> dict[str, float]:
    paths = [p for p in (ROOT / "rules", ROOT / "examples") if p.exists()]
    times = {}
    for path in collect_rule_files(paths):
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            check_path(path)
            best = min(best, time.perf_counter() - started)
        times[str(path.relative_to(ROOT))] = best * 1000
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    rate, size = states_per_second()
    times = file_times()
    worst = max(times.values(), default=0.0)
    if args.json:
        print(
            json.dumps(
                {
                    "states_per_s": round(rate),
                    "max_file_ms": round(worst, 2),
                    "synthetic_states": size,
                    "files": {k: round(v, 2) for k, v in times.items()},
                }
            )
        )
        return
    print(f"exploration: {rate:,.0f} states/s ({size:,} positions of a synthetic agent)")
    for name, ms in times.items():
        print(f"check {name}: {ms:.2f} ms")
    print(f"slowest file: {worst:.2f} ms over {len(times)} file(s)")


if __name__ == "__main__":
    main()
