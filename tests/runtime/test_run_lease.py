"""One owner per run: real `toolfsm` processes on SQLite and PostgreSQL.

A tool blocks on a file (BLOCK_AT names it; it writes BLOCKED and waits for RELEASE), so a
process holds a run's lease at a known point while the test starts a second one: no timing.
Every tool appends to a ledger first, the ground truth of what ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from engine.providers.base import ModelReply, ToolCall
from engine.runtime import Runner
from engine.store import open_store
from engine.store.errors import LeaseLost, RunClaimed
from engine.store.records import utcnow
from tests.runtime._helpers import make_agent

AGENT = """\
version: 1
agent: refunds
tools:
  - {name: lookup, idempotent: true}
  - charge
  - refund
  - finish
rules:
  - terminal: finish
  - requires_approval: refund
run:
  input: settle the account
"""

TOOLS = """\
import os, pathlib, time

def _hit(name, arg):
    with open(os.environ["LEDGER"], "a") as ledger:
        ledger.write(f"{name}:{arg}\\n")
    if os.environ.get("BLOCK_AT") == f"{name}:{arg}":
        pathlib.Path(os.environ["BLOCKED"]).write_text(str(os.getpid()))
        release = pathlib.Path(os.environ["RELEASE"])
        deadline = time.monotonic() + 120
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

def lookup(account: str) -> dict:
    _hit("lookup", account)
    return {"account": account, "balance": 40}

def charge(charge_id: str) -> str:
    _hit("charge", charge_id)
    return f"charged ({charge_id})"

def refund(refund_id: str) -> str:
    _hit("refund", refund_id)
    return f"refund {refund_id} paid"

def finish() -> str:
    _hit("finish", "")
    return "settled"
"""

SCRIPT = [
    {"call": "lookup", "args": {"account": "a1"}},
    {"call": "charge", "args": {"charge_id": "c1"}},
    {"call": "refund", "args": {"refund_id": "r1"}},
    {"call": "finish"},
]
TIMEOUT_S = 120


def _db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _db_url(request, tmp_path)


# The tests of several live `toolfsm` processes take 5-6 s each; on PostgreSQL they are in the
# slow lane (.ci/run runs it). The default lane keeps them on SQLite, and PostgreSQL's lease
# in tests/store/test_store_lease.py (racing claimants in separate processes included) and
# in the two tests below that use `db`.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def processes_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _db_url(request, tmp_path)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "agent.yaml").write_text(AGENT)
    (tmp_path / "tools.py").write_text(TOOLS)
    (tmp_path / "script.yaml").write_text(json.dumps({"replies": SCRIPT}))
    return tmp_path


def _env(workdir: Path, db: str, block: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "LEDGER": str(workdir / "ledger"),
        "BLOCKED": str(workdir / "blocked"),
        "RELEASE": str(workdir / "release"),
        "TOOLFSM_DB": db,
    }
    env.pop("BLOCK_AT", None)
    if block:
        env["BLOCK_AT"] = block
    return env


def _toolfsm(workdir: Path, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        env=_env(workdir, db),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def _start_blocked(workdir: Path, db: str, block: str, *args: str) -> subprocess.Popen[str]:
    """Start `toolfsm ARGS` and return once its tool `block` is blocked (it holds the run)."""
    for marker in ("blocked", "release"):
        (workdir / marker).unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        env=_env(workdir, db, block),
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not (workdir / "blocked").exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the process exited before {block}: {out}\n{err}")
        assert time.monotonic() < deadline, f"the process never reached {block}"
        time.sleep(0.02)
    return proc


def _release(workdir: Path, proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    (workdir / "release").write_text("go")
    out, err = proc.communicate(timeout=TIMEOUT_S)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _ledger(workdir: Path) -> list[str]:
    return (workdir / "ledger").read_text().splitlines()


def _newest_run(db: str) -> str:
    # (PostgreSQL's schema is shared by the session's tests: the newest run is this test's.)
    with open_store(db) as store:
        return store.list_runs(agent="refunds", limit=1)[0].id


def _assert_refused(done: subprocess.CompletedProcess[str], pid: int) -> None:
    """Refused with one line that names the owner (host and pid) and its lease's age."""
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("toolfsm: error: run ")
    assert "is being run by another process" in lines[0]
    assert f"{socket.gethostname()}:{pid}:" in lines[0]
    assert "lease renewed" in lines[0] and " s ago" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert "cannot become" not in done.stdout + done.stderr  # no state-machine internals


def test_a_run_another_live_process_runs_cannot_be_resumed(
    workdir: Path, processes_db: str
) -> None:
    db = processes_db
    runner = _start_blocked(workdir, db, "charge:c1", "run", "agent.yaml")
    try:
        run_id = _newest_run(db)
        with open_store(db) as store:
            run = store.get_run(run_id)
        assert run.status == "running"
        assert run.owner is not None and run.owner.startswith(f"{socket.gethostname()}:")
        assert run.lease_expires_at is not None
        # Each of these would run the run a second time beside the live process.
        for args in (("resume", run_id), ("resume", run_id[:10], "--retry"), ("approve", run_id)):
            _assert_refused(_toolfsm(workdir, db, "runs", *args), runner.pid)
        assert _ledger(workdir) == ["lookup:a1", "charge:c1"]
        # `runs show` says who runs it, and gives no hint that would be refused.
        shown = _toolfsm(workdir, db, "runs", "show", run_id)
        assert shown.returncode == 0, shown.stderr
        assert f"held by {socket.gethostname()}:{runner.pid}:" in shown.stdout
        assert "resume:" not in shown.stdout and "wait:    another process" in shown.stdout
    finally:
        first = _release(workdir, runner)
    assert first.returncode == 0, first.stderr
    assert "stopped: awaiting_approval" in first.stdout
    assert _ledger(workdir) == ["lookup:a1", "charge:c1"]
    with open_store(db) as store:
        run = store.get_run(run_id)
    # Paused: nobody holds the run, so a reviewer can take it.
    assert (run.status, run.owner, run.lease_expires_at) == ("awaiting_approval", None, None)


def test_two_reviewers_of_one_call_execute_exactly_one_decision(
    workdir: Path, processes_db: str
) -> None:
    db = processes_db
    paused = _toolfsm(workdir, db, "run", "agent.yaml")
    assert "stopped: awaiting_approval" in paused.stdout, paused.stderr
    run_id = _newest_run(db)
    # The first reviewer's approval runs the refund, which blocks: it holds the run.
    first = _start_blocked(workdir, db, "refund:r1", "runs", "approve", run_id[:8])
    try:
        _assert_refused(_toolfsm(workdir, db, "runs", "approve", run_id), first.pid)
        _assert_refused(_toolfsm(workdir, db, "runs", "deny", run_id, "--reason", "no"), first.pid)
    finally:
        done = _release(workdir, first)
    assert done.returncode == 0, done.stderr
    assert "approved " in done.stdout and "stopped: terminal_tool" in done.stdout
    # Afterwards the call is decided and the run finished: both are refused, and say why.
    for args in (("approve", run_id), ("deny", run_id, "--reason", "no")):
        late = _toolfsm(workdir, db, "runs", *args)
        assert late.returncode != 0
        assert (
            late.stderr.strip()
            == f"toolfsm: error: run {run_id} is finished, not awaiting approval"
        )
    assert _ledger(workdir) == ["lookup:a1", "charge:c1", "refund:r1", "finish:"]
    with open_store(db) as store:
        snap = store.load_run(run_id)
    assert [c.status for c in snap.calls if c.tool == "refund"] == ["finished"]
    assert (snap.run.status, snap.run.owner) == ("finished", None)


class _ThinkingProvider:
    """A model that thinks until told to answer (an asyncio event), then calls `done`."""

    name = "thinking"

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def complete(self, request: Any) -> ModelReply:
        if any(m.role == "tool" for m in request.messages):
            return ModelReply(text="done", tool_calls=())
        self.asked.set()
        await self.answer.wait()
        return ModelReply(None, (ToolCall(id="c1", name="done", arguments="{}"),))


def test_the_lease_is_renewed_while_the_model_thinks(db: str) -> None:
    def done() -> str:
        return "ok"

    agent = make_agent("version: 1\nagent: thinker\ntools: [done]\n", done)
    provider = _ThinkingProvider()
    with open_store(db) as store:
        runner = Runner(agent, provider, store=store, lease_seconds=1.5)

        async def main() -> tuple[Any, list[Any]]:
            task = asyncio.create_task(runner.run("think"))
            await provider.asked.wait()
            (run,) = [r for r in store.list_runs(agent="thinker") if r.status == "running"]
            seen = [store.get_run(run.id)]
            # Renewed by the heartbeat, with no step written meanwhile.
            while len({r.lease_expires_at for r in seen}) < 3:
                await asyncio.sleep(0.05)
                seen.append(store.get_run(run.id))
            with pytest.raises(RunClaimed, match="is being run by another process"):
                store.claim_run(run.id, "someone-else:1:x")
            provider.answer.set()
            return await task, seen

        result, seen = asyncio.run(main())
        assert result.stop_reason.value == "end_turn"
        assert {r.steps_count for r in seen} == {0}
        after = store.get_run(result.run_id)
        assert (after.status, after.owner) == ("finished", None)


def test_a_process_whose_lease_was_taken_over_runs_nothing_more(db: str) -> None:
    ran: list[str] = []

    def done() -> str:
        ran.append("done")
        return "ok"

    agent = make_agent("version: 1\nagent: overtaken\ntools: [done]\n", done)
    provider = _ThinkingProvider()
    with open_store(db) as store:
        runner = Runner(agent, provider, store=store)

        async def main() -> str:
            task = asyncio.create_task(runner.run("think"))
            await provider.asked.wait()
            (run,) = [r for r in store.list_runs(agent="overtaken") if r.status == "running"]
            # The owner froze past its lease (as if): another process takes the run over.
            with store.engine.begin() as connection:
                connection.execute(
                    text("UPDATE run SET lease_expires_at = :past WHERE id = :id"),
                    {"past": utcnow() - timedelta(seconds=1), "id": run.id},
                )
            store.claim_run(run.id, "newcomer:1:x")
            provider.answer.set()
            with pytest.raises(LeaseLost, match="no longer holds the run's lease"):
                await task
            return run.id

        run_id = asyncio.run(main())
        assert ran == []  # the side-effect call was never started
        snap = store.load_run(run_id)
        assert snap.calls == () and snap.run.owner == "newcomer:1:x"
        assert snap.run.status == "running" and snap.steps == ()
