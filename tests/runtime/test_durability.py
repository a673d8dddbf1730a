"""Killed workers: a real `toolfsm run` subprocess is SIGKILLed mid-run, then resumed.

Every tool appends to a ledger file before doing anything else, so the ledger is the ground
truth of what ran. The tool named by BLOCK_AT writes a marker and hangs; the test waits for
the marker and kills the process with SIGKILL (no cleanup code runs), then resumes it with
`toolfsm runs resume` in a new process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.store import open_store

AGENT = """\
version: 1
agent: payments
tools:
  - {name: lookup, idempotent: true}
  - charge
  - approve_refund
  - finish
rules:
  - terminal: finish
  - requires_approval: approve_refund
run:
  input: settle the account
"""

TOOLS = """\
import os, pathlib, time

def _hit(name, arg):
    with open(os.environ["LEDGER"], "a") as ledger:
        ledger.write(f"{name}:{arg}\\n")
        ledger.flush()
        os.fsync(ledger.fileno())
    if os.environ.get("BLOCK_AT") == f"{name}:{arg}":
        pathlib.Path(os.environ["BLOCKED"]).write_text("1")
        time.sleep(600)

def lookup(account: str) -> dict:
    _hit("lookup", account)
    return {"account": account, "balance": 40}

def charge(charge_id: str, amount: int) -> str:
    _hit("charge", charge_id)
    return f"charged {amount} ({charge_id})"

def approve_refund(refund_id: str) -> str:
    _hit("approve_refund", refund_id)
    return f"refund {refund_id} paid"

def finish() -> str:
    _hit("finish", "")
    return "settled"
"""

SCRIPT = [
    {"call": "lookup", "args": {"account": "a1"}},
    {
        "calls": [
            {"call": "charge", "args": {"charge_id": "c1", "amount": 10}},
            {"call": "lookup", "args": {"account": "a2"}},
        ]
    },
    {"call": "charge", "args": {"charge_id": "c2", "amount": 20}},
    {"call": "finish"},
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "agent.yaml").write_text(AGENT)
    (tmp_path / "tools.py").write_text(TOOLS)
    (tmp_path / "script.yaml").write_text(json.dumps({"replies": SCRIPT}))
    return tmp_path


def _env(workdir: Path, db: str, block: str | None = None) -> dict[str, str]:
    env = {**os.environ, "LEDGER": str(workdir / "ledger"), "BLOCKED": str(workdir / "blocked")}
    env["TOOLFSM_DB"] = db
    env.pop("BLOCK_AT", None)
    if block:
        env["BLOCK_AT"] = block
    return env


def _toolfsm(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _run_and_kill(workdir: Path, db: str, block: str) -> None:
    (workdir / "blocked").unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", "agent.yaml"],
        env=_env(workdir, db, block),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not (workdir / "blocked").exists():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early: {proc.stderr.read().decode()}")
        assert time.monotonic() < deadline, "the worker never reached the kill point"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _ledger(workdir: Path) -> list[str]:
    return (workdir / "ledger").read_text().splitlines()


def _committed(db: str) -> tuple[str, list[dict]]:
    with open_store(db) as store:
        (run,) = store.list_runs()
        snap = store.load_run(run.id)
        return run.id, [s.model_dump(mode="json") for s in snap.steps]


@pytest.mark.parametrize(
    ("block", "committed_before", "side_effect_interrupted", "on_record"),
    [
        # The first call of the run, idempotent: re-executed. Nothing of its step was
        # written (idempotent calls are recorded with the step commit), so the resume asks
        # the model again.
        ("lookup:a1", 0, False, False),
        # charge c1 finished in the same uncommitted step: its result was committed before
        # lookup a2 ran, and lookup a2's "started" record with it.
        ("lookup:a2", 1, False, True),
        ("charge:c2", 2, True, True),  # a side-effect call cut off: needs a decision
        ("finish:", 3, True, True),  # the terminal call itself (side effects by default)
    ],
)
def test_sigkill_then_resume_loses_nothing_and_repeats_no_side_effect(
    workdir: Path, block: str, committed_before: int, side_effect_interrupted: bool, on_record: bool
) -> None:
    db = f"sqlite:///{workdir / 'runs.db'}"
    _run_and_kill(workdir, db, block)
    run_id, before = _committed(db)
    assert len(before) == committed_before
    with open_store(db) as store:
        assert store.get_run(run_id).status == "running"  # what a crash leaves behind
        pending = store.load_run(run_id).pending_calls
        # A side-effect call is on record as started before it runs.
        assert [
            f"{c.tool}:{c.arguments.get('account') or c.arguments.get('charge_id') or ''}"
            for c in pending
        ] == ([block] if on_record else [])

    env = _env(workdir, db)
    resumed = _toolfsm("runs", "resume", run_id[:10], env=env, cwd=workdir)
    if side_effect_interrupted:
        assert resumed.returncode == 0, resumed.stderr
        assert "stopped: awaiting_decision" in resumed.stdout
        with open_store(db) as store:
            assert store.get_run(run_id).status == "awaiting_decision"
        resumed = _toolfsm("runs", "resume", run_id, "--mark-failed", env=env, cwd=workdir)
        if block == "finish:":
            # The model is told the call failed and must finish again: the script has no
            # more replies, so the run stops with an error that says so.
            assert "script" in resumed.stdout + resumed.stderr
    assert resumed.returncode in (0, 1), resumed.stderr

    run_id2, after = _committed(db)
    assert run_id2 == run_id
    # Every step committed before the kill is still there, unchanged.
    assert after[:committed_before] == before
    ledger = _ledger(workdir)
    assert ledger.count("charge:c1") == 1
    assert ledger.count("charge:c2") == 1
    assert ledger.count("finish:") == 1
    # An interrupted idempotent call is simply run again.
    assert ledger.count(block) == (1 if side_effect_interrupted else 2)
    with open_store(db) as store:
        snap = store.load_run(run_id)
        assert snap.pending_calls == ()
        if block != "finish:":
            assert (snap.run.status, snap.run.stop_reason) == ("finished", "terminal_tool")
            assert len(snap.steps) == 4
        else:
            failed = [c for c in snap.calls if c.status == "failed"]
            assert [c.tool for c in failed] == ["finish"]


def test_retry_decision_runs_the_interrupted_side_effect_call_again(workdir: Path) -> None:
    db = f"sqlite:///{workdir / 'runs.db'}"
    _run_and_kill(workdir, db, "charge:c2")
    run_id, _ = _committed(db)
    env = _env(workdir, db)
    assert "awaiting_decision" in _toolfsm("runs", "resume", run_id, env=env, cwd=workdir).stdout
    done = _toolfsm("runs", "resume", run_id, "--retry", env=env, cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert "stopped: terminal_tool" in done.stdout
    assert _ledger(workdir).count("charge:c2") == 2  # the human chose to run it again


def test_approve_and_deny_across_process_restarts(workdir: Path) -> None:
    script = [
        {"call": "lookup", "args": {"account": "a1"}},
        {"call": "approve_refund", "args": {"refund_id": "r1"}},
        {"call": "approve_refund", "args": {"refund_id": "r2"}},
        {"text": "Refund r2 was denied; nothing more to do."},
    ]
    (workdir / "script.yaml").write_text(json.dumps({"replies": script}))
    db = f"sqlite:///{workdir / 'runs.db'}"
    env = _env(workdir, db)
    first = _toolfsm("run", "agent.yaml", env=env, cwd=workdir)
    assert first.returncode == 0, first.stderr
    assert "needs approval" in first.stdout and "stopped: awaiting_approval" in first.stdout
    run_id, steps = _committed(db)
    assert len(steps) == 1
    with open_store(db) as store:
        (waiting,) = store.load_run(run_id).pending_calls
        assert (waiting.tool, waiting.status, waiting.arguments) == (
            "approve_refund",
            "awaiting_approval",
            {"refund_id": "r1"},
        )
    assert "approve_refund:r1" not in _ledger(workdir)

    # A new process approves: the call runs, the run goes on to the next approval.
    second = _toolfsm(
        "runs", "approve", run_id[:8], "--call", waiting.call_id, env=env, cwd=workdir
    )
    assert second.returncode == 0, second.stderr
    assert "stopped: awaiting_approval" in second.stdout
    assert _ledger(workdir).count("approve_refund:r1") == 1

    # Another new process denies: the model gets the reason, the tool never runs.
    third = _toolfsm("runs", "deny", run_id, "--reason", "over the limit", env=env, cwd=workdir)
    assert third.returncode == 0, third.stderr
    assert "stopped: end_turn" in third.stdout
    assert "approve_refund:r2" not in _ledger(workdir)
    with open_store(db) as store:
        snap = store.load_run(run_id)
        denied = [c for c in snap.calls if c.status == "denied"]
        assert [c.arguments for c in denied] == [{"refund_id": "r2"}]
        tool_texts = [m.content.get("text", "") for m in snap.messages if m.role == "tool"]
        assert any("over the limit" in t and t.startswith("Denied") for t in tool_texts)
        assert (snap.run.status, snap.run.stop_reason) == ("finished", "end_turn")
        # Approving a finished run is refused with a clear message.
    again = _toolfsm("runs", "approve", run_id, env=env, cwd=workdir)
    assert again.returncode == 2 and "not awaiting approval" in again.stderr
