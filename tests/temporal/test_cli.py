"""The command line of runs on Temporal: `run --detach`, a denial, what is refused and why,
`worker`'s errors, `temporal dev`, and the one-line error without the extra."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from engine.errors import ToolfsmError
from tests._inprocess import toolfsm
from tests.temporal.conftest import WorkerProcess, start_worker
from tests.temporal.test_examples import REPO, _outcome


def _support(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "examples" / "support", tmp_path / "agents" / "support")
    return tmp_path / "agents" / "support" / "agent.yaml"


def _wait_for_status(db: str, run_id: str, status: str, tmp_path: Path) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while True:
        shown = toolfsm(
            ["runs", "show", run_id, "--json", "--db", db], env=dict(os.environ), cwd=tmp_path
        )
        if shown.returncode == 0:
            run: dict[str, object] = json.loads(shown.stdout)
            if run["status"] == status:
                return run
        assert time.monotonic() < deadline, f"run {run_id} never became {status}"
        time.sleep(0.1)


def waiting_support_run(
    address: str, workers: list[WorkerProcess], tmp_path: Path
) -> tuple[str, str]:
    """A worker of its own, and the support example started on it with --detach, waiting
    for approval: (the store's URL, the run id)."""
    file = _support(tmp_path)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    queue = f"support-{uuid.uuid4().hex[:8]}"
    start_worker(workers, [file.parent], address, queue, db, tmp_path / "w.log")
    args = ["run", str(file), "--engine", "temporal", "--address", address]
    started = toolfsm(
        [*args, "--task-queue", queue, "--detach", "--db", db], env=dict(os.environ), cwd=tmp_path
    )
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    _wait_for_status(db, run_id, "awaiting_approval", tmp_path)
    return db, run_id


def test_detach_prints_the_run_id_and_a_denial_goes_to_the_workflow(
    temporal_address: str, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    file = _support(tmp_path)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    queue = f"cli-{uuid.uuid4().hex[:8]}"
    start_worker(workers, [file.parent], temporal_address, queue, db, tmp_path / "w.log")
    env = {**os.environ, "COLUMNS": "200"}
    args = ["run", str(file), "--model", f"scripted:{file.parent / 'script-deny.yaml'}"]
    args += ["--engine", "temporal", "--address", temporal_address, "--task-queue", queue]
    started = toolfsm([*args, "--detach", "--db", db], env=env, cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", run_id), started.stdout
    _wait_for_status(db, run_id, "awaiting_approval", tmp_path)

    plain = toolfsm(["runs", "resume", run_id, "--db", db], env=env, cwd=tmp_path)
    assert plain.returncode == 2
    assert f"run {run_id} runs on Temporal ({temporal_address})" in plain.stderr

    denied = toolfsm(
        ["runs", "deny", run_id, "--reason", "refunds over 30 EUR need a manager", "--db", db],
        env=env,
        cwd=tmp_path,
    )
    assert denied.returncode == 0, denied.stdout + denied.stderr
    assert "denied call_3 (refund) on Temporal" in denied.stdout
    remote = _wait_for_status(db, run_id, "finished", tmp_path)

    local_db = f"sqlite:///{tmp_path / 'local.db'}"
    ran = toolfsm([*args[:4], "--db", local_db], env=env, cwd=tmp_path)
    assert "awaiting_approval" in ran.stdout, ran.stdout + ran.stderr
    listed = toolfsm(["runs", "list", "--json", "--db", local_db], env=env, cwd=tmp_path)
    local_id = json.loads(listed.stdout)[0]["run_id"]
    toolfsm(
        [
            "runs",
            "deny",
            local_id,
            "--reason",
            "refunds over 30 EUR need a manager",
            "--db",
            local_db,
        ],
        env=env,
        cwd=tmp_path,
    )
    shown = toolfsm(["runs", "show", local_id, "--json", "--db", local_db], env=env, cwd=tmp_path)
    local = json.loads(shown.stdout)
    assert _outcome(remote) == _outcome(local)  # type: ignore[arg-type]


def test_run_detach_needs_temporal(tmp_path: Path) -> None:
    file = _support(tmp_path)
    ran = toolfsm(
        ["run", str(file), "--detach", "--db", f"sqlite:///{tmp_path / 'r.db'}"],
        env=dict(os.environ),
        cwd=tmp_path,
    )
    assert ran.returncode == 2
    assert "--detach needs --engine temporal" in ran.stderr


def test_worker_errors_are_one_line(temporal_address: str, tmp_path: Path) -> None:
    env, db = dict(os.environ), f"sqlite:///{tmp_path / 'r.db'}"
    missing = toolfsm(["worker", str(tmp_path / "nope"), "--db", db], env=env, cwd=tmp_path)
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        f"toolfsm: error: no such file or folder: {tmp_path / 'nope'}",
    )
    (tmp_path / "empty").mkdir()
    empty = toolfsm(["worker", str(tmp_path / "empty"), "--db", db], env=env, cwd=tmp_path)
    assert empty.returncode == 2
    assert "no agent files under" in empty.stderr
    file = _support(tmp_path)
    unreachable = toolfsm(
        ["worker", str(file), "--address", f"127.0.0.1:{_closed_port()}", "--db", db],
        env=env,
        cwd=tmp_path,
    )
    assert unreachable.returncode == 2
    assert "cannot reach the Temporal server at 127.0.0.1:" in unreachable.stderr
    local = toolfsm(["worker", str(file), "--engine", "local", "--db", db], env=env, cwd=tmp_path)
    assert local.returncode == 2
    assert "give --engine temporal" in local.stderr


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_temporal_dev_serves_on_loopback(temporal_address: str, tmp_path: Path) -> None:
    from engine.temporal.dev import wait_for_port

    port = _closed_port()
    db_file = tmp_path / "temporal.db"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "temporal",
            "dev",
            "--port",
            str(port),
            "--db-file",
            str(db_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process=server)
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=20)
    text = out.decode("utf-8", "replace")
    assert f"Temporal dev server on 127.0.0.1:{port}" in text
    assert "history.transferProcessorMaxPollRPS=1000" in text
    assert db_file.exists()


def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.temporal import require_temporal

    monkeypatch.setitem(sys.modules, "temporalio", None)
    with pytest.raises(ToolfsmError, match=r"pip install 'toolfsm\[temporal\]'"):
        require_temporal()


def test_a_cancelled_workflow_leaves_its_run_cancelled(
    temporal_address: str, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    import asyncio

    from temporalio.client import Client

    db, run_id = waiting_support_run(temporal_address, workers, tmp_path)

    async def cancel() -> None:
        client = await Client.connect(temporal_address)
        await client.get_workflow_handle(run_id).cancel()

    asyncio.run(cancel())
    run = _wait_for_status(db, run_id, "cancelled", tmp_path)
    assert run["stop_reason"] == "cancelled"
    assert run["owner"] is None  # given up with the stop
    approved = toolfsm(["runs", "approve", run_id, "--db", db], env=dict(os.environ), cwd=tmp_path)
    assert approved.returncode == 2
    assert f"run {run_id} is cancelled, not waiting for a decision" in approved.stderr


def test_detach_warns_when_no_worker_takes_the_run(
    temporal_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.cli import temporal as cli_temporal

    monkeypatch.setattr(cli_temporal, "DETACH_WAIT_SECONDS", 0.5)
    file = _support(tmp_path)
    args = ["run", str(file), "--engine", "temporal", "--address", temporal_address]
    args += ["--task-queue", f"nobody-{uuid.uuid4().hex[:8]}", "--detach"]
    started = toolfsm(
        [*args, "--db", f"sqlite:///{tmp_path / 'r.db'}"], env=dict(os.environ), cwd=tmp_path
    )
    assert started.returncode == 0
    assert re.fullmatch(r"[0-9a-f]{32}", started.stdout.strip())
    assert "no worker has put it on record in 0.5 s" in started.stderr
