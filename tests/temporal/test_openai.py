"""A Temporal run with a real model client: the official `openai` SDK in the worker's model
activity, against an OpenAI-compatible server on 127.0.0.1. The server gets exactly the
request bodies a local run sends (the activity reads the conversation from the store), a
worker killed while the model thinks hands the request to the other worker (asked again, no
side effect twice), and a server that is down stops the run with its error, as locally."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from tests._history import assert_valid_chat_histories
from tests._llm_server import DOWN, HANG, chat_server
from tests.runtime._cli import env_for, ledger, make_workdir, only_run, toolfsm
from tests.runtime.test_durability import AGENT, TOOLS
from tests.runtime.test_resume_cli import model_args, reply
from tests.temporal.conftest import WorkerProcess, start_worker

REPLIES = (
    reply("c1", "lookup", account="a1"),
    reply("c2", "charge", charge_id="ch1", amount=10),
    reply("c3", "finish"),
)


def _temporal(workdir: Path, address: str) -> tuple[list[str], str]:
    queue = f"openai-{uuid.uuid4().hex[:8]}"
    return ["--engine", "temporal", "--address", address, "--task-queue", queue], queue


def _worker(
    workers: list[WorkerProcess], workdir: Path, address: str, queue: str, n: int
) -> WorkerProcess:
    db = f"sqlite:///{workdir / 'runs.db'}"
    log = workdir / f"worker-{n}.log"
    return start_worker(
        workers, [workdir / "agent.yaml"], address, queue, db, log, env=env_for(workdir)
    )


def _unstreamed(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("stream", "stream_options")}


def test_the_model_gets_the_request_bodies_of_a_local_run(
    temporal_address: str, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    local = make_workdir(tmp_path / "local", AGENT, TOOLS)
    with chat_server(*REPLIES) as server:
        toolfsm(local, "run", "agent.yaml", *model_args(server))
        local_bodies = server.bodies
    remote = make_workdir(tmp_path / "temporal", AGENT, TOOLS)
    engine, queue = _temporal(remote, temporal_address)
    _worker(workers, remote, temporal_address, queue, 1)
    with chat_server(*REPLIES) as server:
        ran = toolfsm(remote, "run", "agent.yaml", *model_args(server), *engine)
        assert "stopped: terminal_tool" in ran.stdout
        # (the local command streams the replies to its live view; a worker asks for them
        # whole: nobody watches an activity)
        assert [_unstreamed(b) for b in server.bodies] == [_unstreamed(b) for b in local_bodies]
    assert ledger(remote) == ledger(local) == ["lookup:a1", "charge:ch1", "finish:"]
    run = only_run(remote)
    assert (run.run.status, run.run.input_tokens) == ("finished", 33)


def test_a_worker_killed_while_the_model_thinks_hands_the_request_on(
    temporal_address: str, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    workdir = make_workdir(tmp_path, AGENT, TOOLS)
    engine, queue = _temporal(workdir, temporal_address)
    first = _worker(workers, workdir, temporal_address, queue, 1)
    with chat_server(REPLIES[0], REPLIES[1], HANG) as server:
        started = toolfsm(workdir, "run", "agent.yaml", *model_args(server), *engine, "--detach")
        run_id = started.stdout.strip()
        assert server.hung.wait(60), "the run never reached step 2's model call"
        _worker(workers, workdir, temporal_address, queue, 2)
        first.kill()
        server.add(REPLIES[2])
        deadline = time.monotonic() + 60
        while only_run(workdir).run.status != "finished":
            assert time.monotonic() < deadline, "the other worker did not finish the run"
            time.sleep(0.1)
        assert ledger(workdir) == ["lookup:a1", "charge:ch1", "finish:"]
        assert_valid_chat_histories(server.bodies)
        # The request asked again is the one the killed worker asked.
        assert server.bodies[3]["messages"] == server.bodies[2]["messages"]
    assert only_run(workdir).run.id == run_id


def test_a_server_that_is_down_stops_the_run_with_its_error(
    temporal_address: str, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    workdir = make_workdir(tmp_path, AGENT, TOOLS)
    engine, queue = _temporal(workdir, temporal_address)
    _worker(workers, workdir, temporal_address, queue, 1)
    with chat_server(REPLIES[0], DOWN) as server:
        ran = toolfsm(workdir, "run", "agent.yaml", *model_args(server), *engine, code=1)
    assert "stopped: error" in ran.stdout
    failed = only_run(workdir)
    assert (failed.run.status, failed.run.stop_reason, failed.run.steps_count) == (
        "failed",
        "error",
        1,
    )
    assert "503" in (failed.run.error or "")  # the provider's own error, as a local run keeps it
