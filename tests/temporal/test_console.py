"""The web console decides on a Temporal run as `runs approve` does: through its workflow."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.store import open_store
from tests.temporal.conftest import WorkerProcess
from tests.temporal.test_cli import waiting_support_run

pytest.importorskip("starlette")


def test_the_console_approves_a_temporal_run(
    temporal_address: str, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    from starlette.testclient import TestClient

    from engine.ui.app import create_app

    db, run_id = waiting_support_run(temporal_address, workers, tmp_path)
    with open_store(db) as store:
        deadline = time.monotonic() + 60
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
