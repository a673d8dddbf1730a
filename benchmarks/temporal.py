"""Benchmark of runs on Temporal (issue 12): what a toolfsm step costs over Temporal's own
activity round trip, and what a second worker adds to a batch of concurrent runs.

Everything runs on one dev server the benchmark starts itself (`start_dev_server`: the
tuned flags, in memory, on a free port of 127.0.0.1) and kills at the end:

1. `step_overhead_ms`: a run of `--steps` steps (median of `--repeats` runs) through the
   real `RunWorkflow` on an in-process worker (`make_worker`, a SQLite store in a temporary
   folder), started with `start_run`; its wall time (start to result) divided by its steps.
   The agent is generated: one idempotent no-op tool kept going by a `continue` rule, a
   scripted model with one reply per step, `max_steps` the step count. Each step is one
   `toolfsm.ask_model` activity and one `toolfsm.run_tool` activity, so the figure is the
   engine's overhead on Temporal (the model and the tool cost nothing).
2. `noop_activity_round_trip_ms`: a workflow of this file that runs `--noops` no-op
   activities in sequence, on the same server, with a worker of the same settings
   (`UnsandboxedWorkflowRunner`, the same sticky and shutdown timeouts); wall time / count.
3. `ratio`: `step_overhead_ms / (2 * noop_activity_round_trip_ms)` (issue 12's target: at
   most 1.5).
4. Throughput: `--batch` concurrent runs of `--batch-steps` steps each, finished by one
   worker process (`toolfsm worker`), then by two worker processes, on one task queue (a
   fresh SQLite store each time); steps per second from the first start to the last end,
   and `two_worker_speedup`, the second over the first.

Beside them, what explains a miss: the no-op activity that heartbeats once (toolfsm's
activities do as they start, with a 5 s heartbeat timeout), the same step with the scripted
model (remade each step from its script, which it parses again), this process's CPU time per
step and per no-op activity (the workers' and the client's, not the dev server's), the steps'
own pace early and late in the measured run (read off the stored steps' start times: the model
activity reads the whole run from the store each step), and what reading that run
(`load_run`) and the script (`load_script`) costs once in this process.

    python benchmarks/temporal.py [--json] [--quick] [--steps N] [--noops M] [--batch B]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from engine.providers.scripted import load_script
from engine.store import open_store
from engine.store.ids import new_run_id, rules_hash
from engine.temporal.client import TASK_TIMEOUT, start_run
from engine.temporal.dev import start_dev_server
from engine.temporal.shelf import AgentShelf
from engine.temporal.wire import RunLocation, RunSpec
from engine.temporal.worker import make_worker

RULES = """\
version: 1
agent: bench
tools:
  - name: noop
    description: Do nothing.
    idempotent: true
rules:
  - continue: noop
"""

TOOLS = '''\
from engine.tools import tool


@tool(idempotent=True, inline=True)
def noop(value: int) -> int:
    """Do nothing."""
    return value
'''

WORKER_KIND = "processes (toolfsm worker, one process each)"


# -- the bare round trip: a workflow of no-op activities ------------------------------------


@activity.defn(name="bench.noop")
async def noop_activity() -> None:
    return None


@activity.defn(name="bench.noop_heartbeat")
async def noop_heartbeat_activity() -> None:
    """A no-op that heartbeats once, as toolfsm's model and tool activities do first."""
    activity.heartbeat()


@workflow.defn(name="bench.noops", sandboxed=False)
class NoopWorkflow:
    @workflow.run
    async def run(self, count: int, heartbeat: bool) -> int:
        name = "bench.noop_heartbeat" if heartbeat else "bench.noop"
        beat = timedelta(seconds=5) if heartbeat else None
        for _ in range(count):
            await workflow.execute_activity(
                name, start_to_close_timeout=timedelta(seconds=30), heartbeat_timeout=beat
            )
        return count


def noop_worker(client: Client, task_queue: str) -> Worker:
    """A worker of `NoopWorkflow` with `make_worker`'s settings."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[NoopWorkflow],
        activities=[noop_activity, noop_heartbeat_activity],
        workflow_runner=UnsandboxedWorkflowRunner(),
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=2),
        graceful_shutdown_timeout=timedelta(seconds=5),
    )


async def noop_round_trip(
    client: Client, task_queue: str, count: int, heartbeat: bool = False
) -> float:
    """Seconds per no-op activity of one workflow running `count` of them (`heartbeat`:
    each heartbeats once, with a heartbeat timeout of 5 s, as toolfsm's do)."""
    started = time.perf_counter()
    done = await client.execute_workflow(
        NoopWorkflow.run,
        args=[count, heartbeat],
        id=f"noops-{uuid.uuid4().hex}",
        task_queue=task_queue,
        task_timeout=TASK_TIMEOUT,
    )
    assert done == count
    return (time.perf_counter() - started) / count


# -- toolfsm runs ---------------------------------------------------------------------------


class Bench:
    """The generated agent (in `folder`) and the server the runs go to."""

    def __init__(self, folder: Path, address: str) -> None:
        self.folder = folder
        self.address = address
        self.agent = folder / "bench.yaml"
        self.agent.write_text(RULES)
        (folder / "tools.py").write_text(TOOLS)

    def script(self, steps: int) -> Path:
        """A script of `steps` noop calls (JSON, which the YAML loader reads)."""
        path = self.folder / f"script-{steps}.json"
        if not path.exists():
            reply = {"call": "noop", "args": {"value": 1}}
            path.write_text(json.dumps({"replies": [reply] * steps}))
        return path

    def spec(
        self, steps: int, task_queue: str, model: str = "scripted"
    ) -> tuple[RunLocation, RunSpec]:
        """What `toolfsm run --engine temporal` would start: a run of `steps` with the
        scripted model (remade each step from its script), or with the random one that
        never stops by itself (kept across the run's steps by the worker, as a real
        model's client is; noop is the only tool it can call)."""
        run_id = new_run_id()
        options: dict[str, Any] = {
            "rules_file": str(self.agent),
            "temporal": {"address": self.address, "task_queue": task_queue, "workflow_id": run_id},
        }
        if model == "scripted":
            script = self.script(steps)
            name = f"scripted:{script}"
            options.update(provider="scripted", script=str(script))
        else:
            name = "random:0"
            options.update(provider="random", provider_options={"text_probability": 0.0})
        sha = rules_hash(self.agent.read_text())
        spec = RunSpec(run_id, "bench", sha, "go", name, options, steps)
        return RunLocation(self.address, task_queue, run_id), spec

    async def run(self, steps: int, task_queue: str, model: str = "scripted") -> tuple[str, float]:
        """One run to its end: its id and its wall time in seconds."""
        location, spec = self.spec(steps, task_queue, model)
        started = time.perf_counter()
        handle = await start_run(location, spec)
        result = await handle.result()
        elapsed = time.perf_counter() - started
        if result["stop_reason"] != "step_limit" or result["steps"] != steps:
            raise RuntimeError(f"the benchmark run did not go {steps} steps: {result}")
        return spec.run_id, elapsed

    async def batch(self, runs: int, steps: int, task_queue: str) -> float:
        """Steps per second of `runs` concurrent runs, first start to last end."""
        started = time.perf_counter()
        await asyncio.gather(*(self.run(steps, task_queue) for _ in range(runs)))
        return runs * steps / (time.perf_counter() - started)


def step_pace(store: Any, run_id: str) -> tuple[float, float]:
    """Median ms per step over the first and the last tenth of a stored run's steps (from
    each step's start to the next's)."""
    starts = [s.started_at.timestamp() for s in store.load_run(run_id).steps]
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(starts)]
    tenth = max(1, len(gaps) // 10)
    return statistics.median(gaps[:tenth]), statistics.median(gaps[-tenth:])


def timed_ms(fn: Any, *args: Any, times: int = 5) -> float:
    """Median ms of `fn(*args)`."""
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        fn(*args)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


# -- the phases -----------------------------------------------------------------------------


async def connect(address: str) -> Client:
    """A client, once the fresh dev server answers (its port opens a moment before)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return await Client.connect(address)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _runs(bench: Bench, args: argparse.Namespace, model: str) -> list[tuple[str, float]]:
    return [await bench.run(args.steps, "bench-steps", model) for _ in range(args.repeats)]


def _per_step(runs: list[tuple[str, float]], steps: int) -> float:
    """Median ms per step of `runs` (wall time / steps)."""
    return statistics.median(elapsed for _, elapsed in runs) / steps * 1000


class Cpu:
    """This process's CPU time (the workers' workflows and activities, the client; not the
    dev server's) while active, in ms per `per` of what it ran."""

    def __init__(self, per: int) -> None:
        self.per = per
        self.ms = 0.0

    def __enter__(self) -> Cpu:
        self._started = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ms = (time.process_time() - self._started) * 1000 / self.per


async def in_process(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """Phases 1-3: the step and the no-op round trip, on in-process workers."""
    client = await connect(bench.address)
    store = open_store(f"sqlite:///{bench.folder / 'steps.db'}")
    shelf = AgentShelf.from_paths([bench.agent])
    steps_worker = await make_worker(client, shelf, store, task_queue="bench-steps")
    try:
        async with steps_worker, noop_worker(client, "bench-noops"):
            for model in ("random", "scripted"):  # warm-up (imports, caches, the server's)
                await bench.run(2, "bench-steps", model)
            await noop_round_trip(client, "bench-noops", 5)
            with Cpu(args.repeats * args.steps) as step_cpu:
                runs = {"random": await _runs(bench, args, "random")}
            runs["scripted"] = await _runs(bench, args, "scripted")
            with Cpu(args.repeats * args.noops) as noop_cpu:
                noops = [
                    await noop_round_trip(client, "bench-noops", args.noops)
                    for _ in range(args.repeats)
                ]
            beats = [
                await noop_round_trip(client, "bench-noops", args.noops, heartbeat=True)
                for _ in range(args.repeats)
            ]
            history = await client.get_workflow_handle(runs["random"][-1][0]).fetch_history()
        step, scripted = (_per_step(runs[m], args.steps) for m in ("random", "scripted"))
        noop = statistics.median(noops) * 1000
        last_run = runs["random"][-1][0]
        early, late = step_pace(store, last_run)
        figures = {
            "step_overhead_ms": round(step, 2),
            "noop_activity_round_trip_ms": round(noop, 2),
            "ratio": round(step / (2 * noop), 2),
            "heartbeat_noop_round_trip_ms": round(statistics.median(beats) * 1000, 2),
            "scripted_step_overhead_ms": round(scripted, 2),
            "scripted_ratio": round(scripted / (2 * noop), 2),
            "step_cpu_ms": round(step_cpu.ms, 2),
            "noop_cpu_ms": round(noop_cpu.ms, 2),
            "step_pace_first_tenth_ms": round(early, 2),
            "step_pace_last_tenth_ms": round(late, 2),
            "load_run_ms": round(timed_ms(store.load_run, last_run), 2),
            "load_script_ms": round(timed_ms(load_script, bench.script(args.steps)), 2),
            # What a step adds to the workflow's history (its replies, results and queued
            # writes; never the conversation): the history grows with the run's length.
            "history_bytes_per_step": round(
                sum(event.ByteSize() for event in history.events) / args.steps
            ),
        }
    finally:
        store.close()
    return figures


@contextlib.asynccontextmanager
async def workers(bench: Bench, count: int, task_queue: str, db: str) -> AsyncIterator[None]:
    """`count` `toolfsm worker` processes serving the agent on `task_queue`, until exit."""
    command = [sys.executable, "-m", "engine", "worker", str(bench.agent), "--engine"]
    command += ["temporal", "--address", bench.address, "--task-queue", task_queue, "--db", db]
    env = {**os.environ, "COLUMNS": "1000"}
    processes = [
        await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, env=env
        )
        for _ in range(count)
    ]
    drains = []
    try:
        for process in processes:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            if b"worker: serving" not in line:
                raise RuntimeError(f"a worker did not start: {line!r}")
            drains.append(asyncio.create_task(process.stdout.read()))
        yield
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            await process.wait()
        for drain in drains:
            drain.cancel()


async def throughput(bench: Bench, args: argparse.Namespace, count: int) -> float:
    """Steps per second of the batch on `count` worker processes (a fresh store)."""
    db = f"sqlite:///{bench.folder / f'batch-{count}.db'}"
    open_store(db).close()  # created and migrated before the workers race to do it
    async with workers(bench, count, "bench-batch", db):
        await asyncio.gather(*(bench.run(2, "bench-batch") for _ in range(2 * count)))
        return await bench.batch(args.batch, args.batch_steps, "bench-batch")


@contextlib.contextmanager
def dev_server() -> Iterator[str]:
    """The tuned dev server on a free port, in memory; its address. Its banner goes to
    stderr (this process's stdout carries only the figures)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        server = start_dev_server(port)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder, dev_server() as address:
        bench = Bench(Path(folder), address)
        figures = await in_process(bench, args)
        one = await throughput(bench, args, 1)
        two = await throughput(bench, args, 2)
    return {
        **figures,
        "throughput_one_worker_steps_s": round(one, 1),
        "throughput_two_workers_steps_s": round(two, 1),
        "two_worker_speedup": round(two / one, 2),
        "workers": WORKER_KIND,
        "steps": args.steps,
        "noops": args.noops,
        "repeats": args.repeats,
        "batch": f"{args.batch} runs x {args.batch_steps} steps",
        "cpus": os.cpu_count(),
    }


# -- the command line -----------------------------------------------------------------------

ROWS = [
    ("step_overhead_ms", "toolfsm step (model + tool activity), ms"),
    ("noop_activity_round_trip_ms", "no-op activity round trip, ms"),
    ("ratio", "step / (2 x round trip), target <= 1.5"),
    ("heartbeat_noop_round_trip_ms", "  the no-op that heartbeats once, ms"),
    ("scripted_step_overhead_ms", "  the same step with the scripted model, ms"),
    ("scripted_ratio", "  its ratio"),
    ("step_cpu_ms", "  CPU of the worker's process per step, ms"),
    ("noop_cpu_ms", "  CPU of the worker's process per no-op activity, ms"),
    ("step_pace_first_tenth_ms", "  pace of the run's first tenth of steps, ms"),
    ("step_pace_last_tenth_ms", "  pace of its last tenth, ms"),
    ("load_run_ms", "  load_run of that run (once, in process), ms"),
    ("load_script_ms", "  load_script of its script (once, in process), ms"),
    ("throughput_one_worker_steps_s", "batch throughput, one worker, steps/s"),
    ("throughput_two_workers_steps_s", "batch throughput, two workers, steps/s"),
    ("two_worker_speedup", "two workers / one"),
    ("workers", "workers"),
    ("batch", "batch"),
    ("cpus", "CPUs"),
]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--steps", type=int, default=50, help="steps of the measured run")
    parser.add_argument("--noops", type=int, default=100, help="no-op activities in a row")
    parser.add_argument("--repeats", type=int, default=3, help="medians of this many")
    parser.add_argument("--batch", type=int, default=20, help="concurrent runs")
    parser.add_argument("--batch-steps", type=int, default=20, help="steps of each")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.noops, args.repeats, args.batch, args.batch_steps = 5, 10, 1, 3, 3
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    figures = asyncio.run(measure(args))
    if args.json:
        print(json.dumps(figures))
        return
    for key, label in ROWS:
        print(f"{label:<52} {figures[key]}")


if __name__ == "__main__":
    main()
