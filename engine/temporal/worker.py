"""A worker: serves the agent files it was given to one task queue of a Temporal server,
writing runs to one store."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from engine.store.protocol import Store
from engine.temporal.activities import RunActivities
from engine.temporal.shelf import AgentShelf, serve
from engine.temporal.workflow import RunWorkflow

__all__ = ["DEFAULT_TASK_QUEUE", "make_worker", "run_worker"]

DEFAULT_TASK_QUEUE = "toolfsm"


async def make_worker(
    client: Client, shelf: AgentShelf, store: Store, *, task_queue: str = DEFAULT_TASK_QUEUE
) -> Worker:
    """A worker of `shelf`'s agents on `task_queue`. Workflows run unsandboxed: toolfsm's
    loop is deterministic by construction (the sandbox re-imports every module per
    workflow, which doubled a step's cost), and a run's agent comes from this process."""
    serve(task_queue, shelf)
    activities = RunActivities(store, shelf)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[RunWorkflow],
        activities=activities.all(),
        workflow_runner=UnsandboxedWorkflowRunner(),
        # A run cached on a worker that died is picked up elsewhere after 2 s, not 5 s.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=2),
        graceful_shutdown_timeout=timedelta(seconds=5),
    )


async def run_worker(
    paths: Iterable[str | Path],
    store: Store,
    *,
    address: str,
    task_queue: str = DEFAULT_TASK_QUEUE,
    namespace: str = "default",
    ready: Callable[[AgentShelf], Any] | None = None,
) -> None:
    """Serve the agent files under `paths` until SIGINT or SIGTERM."""
    shelf = AgentShelf.from_paths(paths)
    client = await Client.connect(address, namespace=namespace)
    worker = await make_worker(client, shelf, store, task_queue=task_queue)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        if ready is not None:
            ready(shelf)
        await stop.wait()
