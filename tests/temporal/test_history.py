"""A run's Temporal history holds its replies, results and queued writes, never the whole
conversation: it grows with the run's length, not with its square (Temporal caps a payload
at 2 MB; when the conversation travels in activity inputs, a 50-step run's history is
already 284 KB and quadratic)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

from tests._inprocess import toolfsm
from tests.temporal.conftest import WorkerProcess, start_worker

AGENT = """\
version: 1
agent: pinger
tools:
  - {name: ping, idempotent: true}
rules: []
run:
  input: ping until told to stop
  max_steps: 100
"""

TOOLS = '''
def ping(note: str) -> str:
    """Answer a ping.

    Args:
        note: Anything.
    """
    return "pong " + note
'''


def _history_bytes(address: str, run_id: str) -> int:
    async def fetch() -> int:
        from temporalio.client import Client

        client = await Client.connect(address)
        history = await client.get_workflow_handle(run_id).fetch_history()
        return sum(event.ByteSize() for event in history.events)

    return asyncio.run(fetch())


def _run(folder: Path, steps: int, address: str, queue: str, db: str) -> str:
    replies = [{"call": "ping", "args": {"note": "x" * 200}} for _ in range(steps)]
    (folder / f"script-{steps}.yaml").write_text(json.dumps({"replies": replies}))
    args = ["run", str(folder / "agent.yaml"), "--model", f"scripted:{folder}/script-{steps}.yaml"]
    args += ["--max-steps", str(steps), "--engine", "temporal", "--address", address]
    started = toolfsm(
        [*args, "--task-queue", queue, "--detach", "--db", db], env=dict(os.environ), cwd=folder
    )
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    deadline = time.monotonic() + 120
    while True:
        shown = toolfsm(
            ["runs", "show", run_id, "--json", "--db", db], env=dict(os.environ), cwd=folder
        )
        if shown.returncode == 0 and json.loads(shown.stdout)["status"] == "finished":
            return run_id
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.1)


def test_the_history_grows_with_the_run_not_its_square(
    temporal_address: str, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    (tmp_path / "agent.yaml").write_text(AGENT)
    (tmp_path / "tools.py").write_text(TOOLS)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    queue = f"history-{uuid.uuid4().hex[:8]}"
    start_worker(
        workers, [tmp_path / "agent.yaml"], temporal_address, queue, db, tmp_path / "w.log"
    )
    short = _history_bytes(temporal_address, _run(tmp_path, 10, temporal_address, queue, db))
    long = _history_bytes(temporal_address, _run(tmp_path, 40, temporal_address, queue, db))
    # Four times the steps: about four times the history (quadratic growth would be 16).
    assert long < 5 * short, (short, long)
    assert long / 40 < 8_000  # bytes per step: replies, results and queued writes
