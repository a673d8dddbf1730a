"""Benchmark of the run loop: the engine's own overhead per step, and concurrent throughput.

1. Step overhead: a scripted provider that answers at once and a no-op tool, so all the time
   is the engine's (gating, argument validation, execution bookkeeping, events) plus the
   store's (SQLite file in WAL mode: the reply, call started, call finished and the step
   commit, each a transaction). Reported: the median per step, with and without the store.
2. Concurrency: 1,000 runs at once, each reply delayed 50 ms (as a model would be), no store;
   efficiency = achieved steps per second / ideal (every run stepping every 50 ms).

    python benchmarks/loop.py [--json] [--runs N] [--steps N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.providers.base import ModelReply, ModelRequest, ToolCall
from engine.runtime import Runner, StepStarted, Stopped, agent_from_text
from engine.store import open_store
from engine.tools import Tool, ToolRegistry

RULES = """\
version: 1
agent: bench
tools: [noop, done]
rules:
  - continue: noop
  - terminal: done
"""


def noop(value: int) -> int:
    """Do nothing."""
    return value


def done() -> str:
    """Finish."""
    return "ok"


class Instant:
    """Replies at once: `steps - 1` noop calls, then done."""

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


def _agent() -> Any:
    tools = ToolRegistry([Tool.from_function(noop), Tool.from_function(done)])
    return agent_from_text(RULES, "bench.yaml", tools=tools)


async def _step_times(agent: Any, store: Any, runs: int, steps: int) -> list[float]:
    times: list[float] = []
    for _ in range(runs):
        runner = Runner(agent, Instant(steps), store=store, max_steps=steps + 1)
        last = None
        async for event in runner.stream("go"):
            if isinstance(event, StepStarted | Stopped):
                now = time.perf_counter()
                if last is not None:
                    times.append(now - last)
                last = now
    return times


async def _concurrent(agent: Any, runs: int, steps: int, delay: float) -> float:
    async def one() -> None:
        runner = Runner(agent, Instant(steps, delay), max_steps=steps + 1)
        result = await runner.run("go")
        assert result.steps == steps, result

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    elapsed = time.perf_counter() - started
    return (steps * delay) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs", type=int, default=50, help="runs for the overhead figure")
    parser.add_argument("--steps", type=int, default=20, help="steps per run")
    parser.add_argument("--concurrent", type=int, default=1000)
    args = parser.parse_args()
    agent = _agent()

    memory = asyncio.run(_step_times(agent, None, args.runs, args.steps))
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            asyncio.run(_step_times(agent, store, 3, args.steps))  # warm up
            persisted = asyncio.run(_step_times(agent, store, args.runs, args.steps))
        finally:
            store.close()
    efficiency = asyncio.run(_concurrent(agent, args.concurrent, 10, 0.05))

    figures = {
        "step_overhead_us": round(statistics.median(persisted) * 1e6, 1),
        "step_overhead_no_store_us": round(statistics.median(memory) * 1e6, 1),
        "step_overhead_p90_us": round(statistics.quantiles(persisted, n=10)[-1] * 1e6, 1),
        "concurrency_efficiency": round(efficiency, 4),
        "concurrent_runs": args.concurrent,
        "steps_measured": len(persisted),
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"step overhead, SQLite WAL store: median {figures['step_overhead_us']} µs "
        f"(p90 {figures['step_overhead_p90_us']} µs; target <= 100 µs)"
    )
    print(f"step overhead, no store:         median {figures['step_overhead_no_store_us']} µs")
    print(
        f"{args.concurrent} concurrent runs, 50 ms replies: "
        f"{figures['concurrency_efficiency']:.1%} of the ideal rate (target >= 90%)"
    )


if __name__ == "__main__":
    main()
