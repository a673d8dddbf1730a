"""Benchmark of the run loop: the engine's own overhead per step, and concurrent throughput.

1. Step overhead: one run at a time, a scripted provider that answers at once and a no-op
   tool (marked `inline=True`: a trivial sync function run on the loop's thread, not handed
   to a worker thread as sync tools are by default), so all the time is the engine's (gating,
   argument validation, execution bookkeeping, events) plus the store's. The store is a SQLite file in WAL mode
   (synchronous=NORMAL: a commit survives a killed process; a power cut may lose the last
   ones). A step with a call of a tool with side effects (the default for a tool) costs two
   transactions: the reply with the call's "started" record before the tool runs, then the
   step commit with the call's result; with an idempotent tool it costs one. Reported: the
   median (and p90) time from one step's start to the next's, per variant, and without a store.
   The variants and the floor's commits are taken in rounds (a run of each, then the floor's
   commits), not one after another: on a shared machine whose speed drifts over seconds, a
   figure taken in a fast stretch against one taken in a slow one made the ratio between
   them swing from 1.8 to 4.3 from one benchmark run to the next; in rounds, the drift
   moves them together.
2. Concurrency: `--concurrent` runs (asyncio tasks) at once, each `--concurrent-steps` steps,
   each reply delayed 50 ms (as a model would be); the ideal is every run stepping every
   50 ms, i.e. runs / 50 ms steps per second; efficiency = ideal time / measured time (run
   setup included). Measured without a store, and with the SQLite store through a
   `GroupCommit` (the runs' flushes of one event-loop iteration share one transaction; each
   run still waits for its own step's commit before its next model call).
3. What explains a miss: the loop's ceiling (steps per second when replies come at once: all
   CPU, one core; the 50 ms runs need `runs / 50 ms` of it, with room for queueing; the median
   of three rounds that alternate without and with the store, each on a new database), the
   garbage collector's pauses by generation during the concurrent runs, and this machine's
   floors: the smallest durable SQLite commit (a side-effect step needs two), the same
   commit taken where a step takes its own, two per step of a run without a store
   (`sqlite_commit_in_loop_us`, and `floor_in_loop_us` made of it as `floor_us` is: the
   engine's work between commits leaves SQLite's code and pages cold), and the efficiency
   that runs doing nothing but sleeping reach.

The targets of issue 11 read these keys, all measured in the same run:
- `floor_us`: two one-row durable SQLite commits (`sqlite_commit_floor_us`, WAL,
  synchronous=NORMAL) plus the step without a store (`step_overhead_no_store_us`): what a
  persisted side-effect step cannot cost less than on this machine;
- `step_overhead_us`: the persisted side-effect step (target: at most 2 x `floor_us`);
- `persisted_ceiling_steps_s` and `no_store_ceiling_steps_s`: the ceiling (replies at once,
  `--concurrent` runs, the store through a `GroupCommit`), and `ceiling_ratio`, the first over
  the second (target: at least 0.2); the same figures as `saturated_steps_per_s` and
  `saturated_steps_per_s_no_store`, kept under their old names;
- `gc_pause_ms_per_1000_steps` (`_no_store`): the collector's pauses (all generations, timed
  with `gc.callbacks`) during the concurrent 50 ms runs with the store (without one), per
  1,000 of their steps.

It uses the public API only (`Runner`, `GroupCommit`, `open_store`, `@tool`, its own provider),
so that it measures the code before and after a change of the loop's or the store's insides.

    python benchmarks/loop.py [--json] [--runs N] [--steps N] [--concurrent N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.providers import ModelReply, ModelRequest, ToolCall
from engine.runtime import Runner, StepStarted, Stopped, agent_from_text
from engine.runtime.journal import GroupCommit
from engine.store import open_store
from engine.tools import tool

RULES = """\
version: 1
agent: bench
tools: [noop, done]
rules:
  - continue: noop
  - terminal: done
"""

REPLY_DELAY = 0.05


# inline: the no-op tools are trivial CPU-only functions, the case the opt-out is for.
@tool(inline=True)
def noop(value: int) -> int:
    """Do nothing."""
    return value


@tool(name="noop", idempotent=True, inline=True)
def noop_idempotent(value: int) -> int:
    """Do nothing (an idempotent tool: its call is recorded with the step's one commit)."""
    return value


@tool(inline=True)
def done() -> str:
    """Finish."""
    return "ok"


class Instant:
    """Replies at once (or after `delay`): `steps - 1` noop calls, then done."""

    name = "bench"

    def __init__(self, steps: int, delay: float = 0.0) -> None:
        self.left = steps
        self.delay = delay
        self.n = 0

    async def complete(self, request: ModelRequest) -> ModelReply:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.left -= 1
        self.n += 1
        if self.left <= 0:
            return ModelReply(None, (ToolCall(f"c{self.n}", "done", "{}"),))
        return ModelReply(None, (ToolCall(f"c{self.n}", "noop", '{"value": 1}'),))


def _agent(idempotent: bool = False) -> Any:
    return agent_from_text(
        RULES, "bench.yaml", tools=[noop_idempotent if idempotent else noop, done]
    )


# The events that mark a step's boundaries (a tuple built once: `A | B` builds a union
# object per call, and the harness should cost as little as it can).
_BOUNDARIES = (StepStarted, Stopped)


async def _step_times(agent: Any, store: Any, runs: int, steps: int) -> list[float]:
    times: list[float] = []
    for _ in range(runs):
        runner = Runner(agent, Instant(steps), store=store, max_steps=steps + 1)
        last = None
        async for event in runner.stream("go"):
            if isinstance(event, _BOUNDARIES):
                now = time.perf_counter()
                if last is not None:
                    times.append(now - last)
                last = now
    return times


async def _commits_between_steps(agent: Any, floor: _FloorTable, steps: int) -> list[float]:
    """The floor's one-row commits taken where a persisted step takes its own: two at each
    step of a run without a store, so the engine's work runs between them."""
    times: list[float] = []
    runner = Runner(agent, Instant(steps), max_steps=steps + 1)
    async for event in runner.stream("go"):
        if isinstance(event, StepStarted):
            times += floor.commit_times(2)
    return times


async def _concurrent(
    agent: Any, runs: int, steps: int, delay: float, store: Any = None
) -> tuple[float, GroupCommit | None]:
    group = GroupCommit(store) if store is not None else None

    async def one() -> None:
        runner = Runner(
            agent, Instant(steps, delay), store=store, max_steps=steps + 1, group_commit=group
        )
        result = await runner.run("go")
        assert result.steps == steps, result

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    elapsed = time.perf_counter() - started
    return (steps * delay) / elapsed, group


class GcPauses:
    """Counts the collector's runs and their pauses, by generation, while active (a
    `gc.callbacks` hook: it observes the collector and changes none of its settings)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._hook)

    def _hook(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.count[generation] += 1
            self.seconds[generation] += time.perf_counter() - self._started

    def figures(self, prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}_gc_collections": self.count,
            f"{prefix}_gc_pause_ms": [round(s * 1000, 1) for s in self.seconds],
        }

    def ms_per_1000(self, steps: int) -> float:
        """The pauses of every generation, in ms per 1,000 of the `steps` measured."""
        return round(sum(self.seconds) * 1000 / steps * 1000, 2)


async def _saturated(agent: Any, runs: int, steps: int, store: Any = None) -> float:
    """Steps per second with replies that come at once: the loop's CPU ceiling (one core)."""
    group = GroupCommit(store) if store is not None else None

    async def one() -> None:
        runner = Runner(agent, Instant(steps), store=store, max_steps=steps + 1, group_commit=group)
        await runner.run("go")

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    return runs * steps / (time.perf_counter() - started)


async def _timers_only(runs: int, steps: int, delay: float) -> float:
    """The concurrency figure of runs that only sleep: what asyncio's timers alone reach here."""

    async def one() -> None:
        for _ in range(steps):
            await asyncio.sleep(delay)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    return (steps * delay) / (time.perf_counter() - started)


class _FloorTable:
    """The smallest durable write, for this machine's floor: one short row inserted and
    committed with the stdlib sqlite3 module, WAL and synchronous=NORMAL as the store uses."""

    def __init__(self, tmp: str) -> None:
        import sqlite3

        self.connection = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        self.connection.execute("PRAGMA journal_mode = WAL")
        self.connection.execute("PRAGMA synchronous = NORMAL")
        self.connection.execute("CREATE TABLE t (run TEXT, seq INTEGER, body TEXT)")
        self.seq = 0

    def commit_times(self, commits: int) -> list[float]:
        """The seconds of each of `commits` one-row commits."""
        times = []
        for _ in range(commits):
            self.seq += 1
            started = time.perf_counter()
            self.connection.execute("BEGIN IMMEDIATE")
            self.connection.execute("INSERT INTO t VALUES (?, ?, ?)", ("run", self.seq, "{}"))
            self.connection.execute("COMMIT")
            times.append(time.perf_counter() - started)
        return times

    def close(self) -> None:
        self.connection.close()


def _commit_floor(tmp: str, commits: int = 2000) -> float:
    """Median seconds of one one-row durable commit (see `_FloorTable`)."""
    table = _FloorTable(tmp)
    try:
        return statistics.median(table.commit_times(commits))
    finally:
        table.close()


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 1)


def _overheads(tmp: str, runs: int, steps: int) -> dict[str, list[float]]:
    """Step times without a store, with a side-effect tool, with an idempotent one, and the
    floor's one-row commits, taken in rounds (one run of each, then as many commits as the
    runs made): a machine that slows down for a while slows every figure alike, so the
    ratios between them hold from one benchmark run to the next."""
    stores = {
        name: open_store(f"sqlite:///{Path(tmp) / (name + '.db')}")
        for name in ("side_effects", "idempotent")
    }
    agents = {"side_effects": _agent(), "idempotent": _agent(idempotent=True)}
    floor = _FloorTable(tmp)
    samples: dict[str, list[float]] = {"no_store": [], **{name: [] for name in stores}}
    samples["commit"], samples["commit_in_loop"] = [], []
    try:
        for round_ in range(runs + 3):  # the first three rounds warm up
            taken = {"no_store": asyncio.run(_step_times(agents["side_effects"], None, 1, steps))}
            for name, store in stores.items():
                taken[name] = asyncio.run(_step_times(agents[name], store, 1, steps))
            taken["commit"] = floor.commit_times(2 * steps)
            taken["commit_in_loop"] = asyncio.run(
                _commits_between_steps(agents["side_effects"], floor, steps)
            )
            if round_ >= 3:
                for name, times in taken.items():
                    samples[name] += times
    finally:
        floor.close()
        for store in stores.values():
            store.close()
    return samples


async def _ceiling_round(agent: Any, tmp: str, name: str, runs: int, steps: int) -> float:
    store = open_store(f"sqlite:///{Path(tmp) / name}")
    try:
        return await _saturated(agent, runs, steps, store)
    finally:
        store.close()


def _ceilings(agent: Any, tmp: str, runs: int, steps: int, rounds: int = 3) -> tuple[float, float]:
    """The median ceilings with the store and without one, measured in alternation (each
    persisted round on a new database: the same work each time)."""
    persisted, bare = [], []
    for round_ in range(rounds):
        bare.append(asyncio.run(_saturated(agent, runs, steps)))
        name = f"ceiling{round_}.db"
        persisted.append(asyncio.run(_ceiling_round(agent, tmp, name, runs, steps)))
    return statistics.median(persisted), statistics.median(bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs", type=int, default=50, help="runs for the overhead figure")
    parser.add_argument("--steps", type=int, default=20, help="steps per run (overhead)")
    parser.add_argument("--concurrent", type=int, default=1000, help="concurrent runs")
    parser.add_argument("--concurrent-steps", type=int, default=10, help="steps per run")
    args = parser.parse_args()
    agent = _agent()

    with tempfile.TemporaryDirectory() as tmp:
        samples = _overheads(tmp, args.runs, args.steps)
        with GcPauses() as bare_gc:
            bare, _ = asyncio.run(
                _concurrent(agent, args.concurrent, args.concurrent_steps, REPLY_DELAY)
            )
        timers_only = asyncio.run(_timers_only(args.concurrent, args.concurrent_steps, REPLY_DELAY))
        store = open_store(f"sqlite:///{Path(tmp) / 'concurrent.db'}")
        try:
            with GcPauses() as stored_gc:
                stored, group = asyncio.run(
                    _concurrent(agent, args.concurrent, args.concurrent_steps, REPLY_DELAY, store)
                )
        finally:
            store.close()
        saturated, saturated_bare = _ceilings(agent, tmp, args.concurrent, args.concurrent_steps)
    assert group is not None
    memory, persisted = samples["no_store"], samples["side_effects"]
    idempotent = samples["idempotent"]
    commit_floor = statistics.median(samples["commit"])
    concurrent_steps = args.concurrent * args.concurrent_steps
    no_store_us = _us(statistics.median(memory))
    floor_us = round(2 * _us(commit_floor) + no_store_us, 1)
    commit_in_loop = statistics.median(samples["commit_in_loop"])

    figures = {
        # Issue 11's targets (see the module docstring).
        "floor_us": floor_us,
        "step_overhead_us": _us(statistics.median(persisted)),
        "persisted_ceiling_steps_s": round(saturated),
        "no_store_ceiling_steps_s": round(saturated_bare),
        "ceiling_ratio": round(saturated / saturated_bare, 3),
        "gc_pause_ms_per_1000_steps": stored_gc.ms_per_1000(concurrent_steps),
        "gc_pause_ms_per_1000_steps_no_store": bare_gc.ms_per_1000(concurrent_steps),
        "step_overhead_p90_us": _us(statistics.quantiles(persisted, n=10)[-1]),
        # The mean carries what the median leaves out: the occasional slow step (a WAL
        # checkpoint, a garbage collection), i.e. what a run of many steps pays per step.
        "step_overhead_mean_us": _us(statistics.mean(persisted)),
        "step_overhead_idempotent_us": _us(statistics.median(idempotent)),
        "step_overhead_idempotent_p90_us": _us(statistics.quantiles(idempotent, n=10)[-1]),
        "step_overhead_no_store_us": no_store_us,
        "step_overhead_no_store_p90_us": _us(statistics.quantiles(memory, n=10)[-1]),
        "steps_measured": len(persisted),
        "concurrency_efficiency": round(stored, 4),
        "concurrency_store": "sqlite-wal-group-commit",
        "concurrency_efficiency_no_store": round(bare, 4),
        "concurrent_runs": args.concurrent,
        "concurrent_steps_per_run": args.concurrent_steps,
        "reply_delay_ms": REPLY_DELAY * 1000,
        "ideal_steps_per_s": round(args.concurrent / REPLY_DELAY),
        # Diagnostics of the group commit, while it counts them.
        "group_commit_transactions": getattr(group, "transactions", None),
        "group_commit_batches": getattr(group, "batches", None),
        # The loop's ceiling: steps per second when replies come at once (all CPU, one core).
        # The 50 ms runs need runs / 50 ms of it, with room to spare for queueing.
        "saturated_steps_per_s": round(saturated),
        "saturated_steps_per_s_no_store": round(saturated_bare),
        **stored_gc.figures("concurrency"),
        **bare_gc.figures("concurrency_no_store"),
        # This machine's floors, for reading the figures above: the smallest durable commit
        # (a step with a side-effect call needs two), and the concurrency figure of runs that
        # do nothing but sleep.
        "sqlite_commit_floor_us": _us(commit_floor),
        # The same commit taken between the engine's steps (the floor's are taken in a tight
        # loop, with SQLite's code and pages hot in the CPU's caches), and the floor so made.
        "sqlite_commit_in_loop_us": _us(commit_in_loop),
        "floor_in_loop_us": round(2 * _us(commit_in_loop) + no_store_us, 1),
        "concurrency_efficiency_timers_only": round(timers_only, 4),
        "tools": "inline",
    }
    if args.json:
        print(json.dumps(figures))
        return
    print("(no-op tools run inline on the event loop's thread: @tool(inline=True))")
    print(
        f"step overhead, SQLite WAL, side-effect tool (2 transactions): median "
        f"{figures['step_overhead_us']} µs, p90 {figures['step_overhead_p90_us']} µs, "
        f"mean {figures['step_overhead_mean_us']} µs "
        f"(floor {floor_us} µs: two one-row commits and the step without a store; "
        f"target <= 2 x floor)"
    )
    print(
        f"step overhead, SQLite WAL, idempotent tool (1 transaction):  median "
        f"{figures['step_overhead_idempotent_us']} µs, "
        f"p90 {figures['step_overhead_idempotent_p90_us']} µs"
    )
    print(
        f"step overhead, no store:                                     median "
        f"{figures['step_overhead_no_store_us']} µs"
    )
    print(
        f"{args.concurrent} concurrent runs x {args.concurrent_steps} steps, 50 ms replies "
        f"(ideal {figures['ideal_steps_per_s']} steps/s): "
        f"{stored:.1%} of the ideal rate with the SQLite store (group commit: "
        f"{figures['group_commit_batches']} flushes in "
        f"{figures['group_commit_transactions']} transactions), "
        f"{bare:.1%} without a store (target >= 90%)"
    )
    print(
        f"ceiling (replies at once, one core): {figures['persisted_ceiling_steps_s']} steps/s "
        f"with the store, {figures['no_store_ceiling_steps_s']} without (ratio "
        f"{figures['ceiling_ratio']}, target >= 0.2); garbage collection during the concurrent "
        f"runs: {stored_gc.count} collections by generation, "
        f"{figures['concurrency_gc_pause_ms']} ms of pauses (store), "
        f"{figures['concurrency_no_store_gc_pause_ms']} ms (no store): "
        f"{figures['gc_pause_ms_per_1000_steps']} and "
        f"{figures['gc_pause_ms_per_1000_steps_no_store']} ms per 1,000 steps"
    )
    print(
        f"this machine's floors: one one-row SQLite WAL commit {figures['sqlite_commit_floor_us']}"
        f" µs (median; {figures['sqlite_commit_in_loop_us']} µs taken between the steps of a "
        f"run); runs that only sleep reach {timers_only:.1%} of the ideal rate"
    )


if __name__ == "__main__":
    main()
