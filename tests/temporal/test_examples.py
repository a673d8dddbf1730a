"""Every example run on Temporal stores the same outcome as a local run, up to timing: the
same steps, gates, replies, calls and results, the same stop. The support example pauses for
approval on both, and `runs approve` (the same command) lets both finish."""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests._inprocess import toolfsm
from tests.temporal.conftest import WorkerProcess, start_worker

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.name for p in (REPO / "examples").iterdir() if (p / "agent.yaml").is_file())

# What differs between two runs of one script by nature: ids, times, where files are.
_RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")
_TIMING = {"started_at", "finished_at", "duration_ms", "created_at", "updated_at"}


def _outcome(run: dict[str, Any]) -> dict[str, Any]:
    steps = []
    for step in run["steps"]:
        calls = [{k: v for k, v in c.items() if k not in _TIMING} for c in step["calls"]]
        steps.append({**{k: v for k, v in step.items() if k not in _TIMING}, "calls": calls})
    kept = ("agent", "status", "stop_reason", "error", "steps_count", "input_tokens")
    return {**{k: run[k] for k in kept}, "position": run["position"], "steps": steps}


def _show(db: str, run_id: str, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    shown = toolfsm(["runs", "show", run_id, "--json", "--db", db], env=env, cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    value: dict[str, Any] = json.loads(shown.stdout)
    return value


def _newest(db: str, env: dict[str, str], cwd: Path) -> str:
    listed = toolfsm(["runs", "list", "--json", "--db", db], env=env, cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    top = [r for r in json.loads(listed.stdout) if r["parent_run_id"] is None]
    run_id: str = top[0]["run_id"]
    return run_id


def _run(args: list[str], db: str, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run, approve while the run waits for it, and return the stored run."""
    ran = toolfsm([*args, "--db", db], env=env, cwd=cwd)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    run_id = _newest(db, env, cwd)
    for _ in range(5):
        run = _show(db, run_id, env, cwd)
        if run["status"] != "awaiting_approval":
            return run
        approved = toolfsm(["runs", "approve", run_id, "--db", db], env=env, cwd=cwd)
        assert approved.returncode == 0, approved.stdout + approved.stderr
    raise AssertionError("the run kept waiting for approval")


@pytest.mark.parametrize("example", EXAMPLES)
def test_an_example_on_temporal_stores_what_a_local_run_stores(
    example: str, temporal_address: str, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    local_dir, remote_dir = tmp_path / "local", tmp_path / "temporal"
    for folder in (local_dir, remote_dir):
        shutil.copytree(REPO / "examples" / example, folder / example)
    local_db = f"sqlite:///{tmp_path / 'local.db'}"
    remote_db = f"sqlite:///{tmp_path / 'temporal.db'}"
    queue = f"examples-{uuid.uuid4().hex[:8]}"
    start_worker(
        workers, [remote_dir], temporal_address, queue, remote_db, tmp_path / "w.log", remote_dir
    )

    local = _run(["run", str(local_dir / example / "agent.yaml")], local_db, env, local_dir)
    remote_args = ["run", str(remote_dir / example / "agent.yaml"), "--engine", "temporal"]
    remote_args += ["--address", temporal_address, "--task-queue", queue]
    remote = _run(remote_args, remote_db, env, remote_dir)

    assert remote["options"]["temporal"]["task_queue"] == queue
    if example == "review":  # the callees ran too, under the run, as locally
        callees = toolfsm(["runs", "list", "--json", "--db", remote_db], env=env, cwd=remote_dir)
        parents = [r["parent_run_id"] for r in json.loads(callees.stdout)]
        assert parents.count(remote["run_id"]) == 2
    # (a callee run's id is made from its caller's: run ids differ throughout)
    mine = _RUN_ID.sub("RUN", json.dumps(_outcome(remote), sort_keys=True))
    theirs = _RUN_ID.sub("RUN", json.dumps(_outcome(local), sort_keys=True))
    theirs = theirs.replace(str(local_dir), str(remote_dir))
    assert mine == theirs
    assert remote["owner"] is None  # the workflow gave the run up when it ended
