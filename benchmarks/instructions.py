"""Instructions per step, counted by valgrind: figures that do not depend on the machine's load.

`benchmarks/loop.py` times the run loop; on a machine shared with other work the same code's
persisted step can measure twice as slow from one run to the next, too noisy to tell a 5%
change. This benchmark counts the CPU instructions of the same workloads instead, with
`valgrind --tool=callgrind`, which gives the same count for the same code whatever else the
machine is doing. What it cannot see is time spent waiting for the kernel (a WAL write, a lock)
or lost to cache misses: a step that needs fewer instructions is cheaper, but the ratio of two
counts is not the ratio of their times (see `loop.py` for those).

Each workload runs in a child process under callgrind twice, with `--small` and `--large` runs
of `--steps` steps; the difference of the two counts divided by the difference in steps is the
count of one step, start-up and warm-up cancelled out. Workloads, as in `loop.py`:
- `side_effects`: the persisted step with a side-effect tool (two transactions, SQLite WAL);
- `idempotent`: the persisted step with an idempotent tool (one transaction);
- `no_store`: the step without a store;
- `commit`: one one-row durable SQLite commit (stdlib sqlite3, WAL, synchronous=NORMAL).

`floor_instructions` is two commits plus the no-store step, as `loop.py`'s `floor_us` is, and
`instruction_ratio` the side-effect step over it.

Eight processes under valgrind: about 4 minutes on an idle 2-core machine.

    python benchmarks/instructions.py [--json] [--small N] [--large N] [--steps N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

WORKLOADS = ("side_effects", "idempotent", "no_store", "commit")
# The commit workload makes this many commits per "step", so that its difference of counts
# rests on as many commits as the steps' rest on instructions.
COMMITS_PER_STEP = 10
_COLLECTED = re.compile(r"Collected : (\d+)")


def _child(workload: str, runs: int, steps: int) -> None:
    """Run `runs` runs of `steps` steps of `workload` (or `runs * steps` commits), after a
    warm-up of the same code."""
    import loop  # benchmarks/loop.py: the same agent, provider and harness

    from engine.store import open_store

    with tempfile.TemporaryDirectory() as tmp:
        if workload == "commit":
            loop._commit_floor(tmp, commits=runs * steps * COMMITS_PER_STEP)
            return
        agent = loop._agent(idempotent=workload == "idempotent")
        store = open_store(f"sqlite:///{Path(tmp) / 'x.db'}") if workload != "no_store" else None
        try:
            asyncio.run(loop._step_times(agent, store, 2, steps))  # warm up
            asyncio.run(loop._step_times(agent, store, runs, steps))
        finally:
            if store is not None:
                store.close()


def _count(workload: str, runs: int, steps: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={Path(tmp) / 'out'}",
                sys.executable,
                __file__,
                "--child",
                workload,
                str(runs),
                str(steps),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind failed on {workload}:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def _per_step(workload: str, small: int, large: int, steps: int) -> int:
    """Instructions of one step (of one commit, for `commit`: its child makes runs * steps)."""
    extra = (large - small) * steps * (COMMITS_PER_STEP if workload == "commit" else 1)
    return round((_count(workload, large, steps) - _count(workload, small, steps)) / extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--small", type=int, default=2, help="runs in the first count")
    parser.add_argument("--large", type=int, default=12, help="runs in the second count")
    parser.add_argument("--steps", type=int, default=20, help="steps per run")
    parser.add_argument(
        "--child", nargs=3, metavar=("WORKLOAD", "RUNS", "STEPS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        workload, runs, steps = args.child
        _child(workload, int(runs), int(steps))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("benchmarks/instructions.py needs valgrind (Debian: apt install valgrind)")
    if args.large <= args.small:
        raise SystemExit("--large must be more runs than --small")
    counts = {w: _per_step(w, args.small, args.large, args.steps) for w in WORKLOADS}
    floor = 2 * counts["commit"] + counts["no_store"]
    figures = {
        "instructions_per_step": counts["side_effects"],
        "instructions_per_step_idempotent": counts["idempotent"],
        "instructions_per_step_no_store": counts["no_store"],
        "instructions_per_commit_floor": counts["commit"],
        "floor_instructions": floor,
        "instruction_ratio": round(counts["side_effects"] / floor, 3),
        "steps_counted": (args.large - args.small) * args.steps,
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"instructions per step: {figures['instructions_per_step']:,} with a side-effect tool "
        f"(two commits), {figures['instructions_per_step_idempotent']:,} idempotent (one), "
        f"{figures['instructions_per_step_no_store']:,} without a store"
    )
    print(
        f"floor: two one-row commits ({figures['instructions_per_commit_floor']:,} each) and "
        f"the no-store step = {floor:,}; the side-effect step is "
        f"{figures['instruction_ratio']} x that"
    )


if __name__ == "__main__":
    main()
