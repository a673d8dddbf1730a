"""The web console decides on a Temporal run as `runs approve` does: through its workflow."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from engine.store import open_store
from tests._inprocess import toolfsm
from tests.temporal.conftest import WorkerProcess, start_worker
from tests.temporal.test_cli import _support

pytest.importorskip("starlette")


def test_the_console_approves_a_temporal_run(
    temporal_address: str, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    from starlette.testclient import TestClient

    from engine.ui.app import create_app

    file = _support(tmp_path)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    queue = f"console-{uuid.uuid4().hex[:8]}"
    start_worker(workers, [file.parent], temporal_address, queue, db, tmp_path / "w.log")
    args = ["run", str(file), "--engine", "temporal", "--address", temporal_address]
    started = toolfsm(
        [*args, "--task-queue", queue, "--detach", "--db", db], env=dict(os.environ), cwd=tmp_path
    )
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    with open_store(db) as store:
        deadline = time.monotonic() + 60
        while store.get_run(run_id).status.value != "awaiting_approval":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        client = TestClient(create_app(store, user="ops"))
        wrong = client.post(f"/api/runs/{run_id}/approve", json={"call_id": "call_9"})
        assert wrong.status_code == 422
        assert "no call 'call_9' awaits a decision" in wrong.json()["error"]
        done = client.post(f"/api/runs/{run_id}/approve", json={"by": "lead"})
        assert done.status_code == 200, done.text
        assert done.json()["call"]["status"] in ("approved", "started", "finished")
        while store.get_run(run_id).status.value != "finished":
            assert time.monotonic() < deadline + 60
            time.sleep(0.1)
        (decision,) = store.load_run(run_id).decisions
        assert decision.reviewer == "lead"
