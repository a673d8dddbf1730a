"""Two workers, one dev server, one store: the support example pauses for approval, a worker
is killed with kill -9, and the other finishes the run with the refund executed exactly once.
A decision that does not fit is refused while the run keeps waiting; a worker whose rule file
changed refuses the run; a refund cut off by a killed worker waits for a human's decision.

The refund of these tests writes a line to a ledger file (with the pid of the worker that
runs it) before it returns, and with $HOLD_REFUND naming a file that exists, it hangs."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests._inprocess import toolfsm
from tests.temporal.conftest import WorkerProcess, start_worker

REPO = Path(__file__).resolve().parents[2]

_LEDGER_REFUND = """

import os as _os
import time as _time

_refund = refund


def refund(order_id: str, amount: float, reason: str) -> str:
    with open(_os.environ["LEDGER"], "a", encoding="utf-8") as ledger:
        ledger.write(f"refund {order_id} {amount} {_os.getpid()}\\n")
    hold = _os.environ.get("HOLD_REFUND")
    while hold and _os.path.exists(hold):
        _time.sleep(0.05)
    return _refund(order_id, amount, reason)


refund.__doc__ = _refund.__doc__
"""


class Setup:
    def __init__(self, tmp_path: Path, address: str, db: str) -> None:
        self.agents = tmp_path / "agents"
        shutil.copytree(REPO / "examples" / "support", self.agents / "support")
        with (self.agents / "support" / "tools.py").open("a", encoding="utf-8") as tools:
            tools.write(_LEDGER_REFUND)
        self.file = self.agents / "support" / "agent.yaml"
        self.ledger = tmp_path / "ledger"
        self.hold = tmp_path / "hold"
        self.env = {
            **os.environ,
            "LEDGER": str(self.ledger),
            "HOLD_REFUND": str(self.hold),
            "COLUMNS": "200",
        }
        self.address, self.db, self.tmp = address, db, tmp_path
        self.queue = f"support-{uuid.uuid4().hex[:8]}"
        self.logs = 0

    def worker(self, workers: list[WorkerProcess]) -> WorkerProcess:
        self.logs += 1
        log = self.tmp / f"worker-{self.logs}.log"
        return start_worker(
            workers, [self.agents], self.address, self.queue, self.db, log, env=self.env
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return toolfsm([*args, "--db", self.db], env=self.env, cwd=self.tmp)

    def start(self) -> str:
        ran = self.cli(
            "run",
            str(self.file),
            "--engine",
            "temporal",
            "--address",
            self.address,
            "--task-queue",
            self.queue,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "stopped: awaiting_approval" in ran.stdout, ran.stdout
        # The paused step, from the store, as a local run's live view shows it.
        assert "step 2  allowed: refund, exchange (call required)" in ran.stdout
        listed = self.cli("runs", "list", "--json")
        run_id: str = json.loads(listed.stdout)[0]["run_id"]
        return run_id

    def show(self, run_id: str) -> dict[str, Any]:
        shown = self.cli("runs", "show", run_id, "--json")
        assert shown.returncode == 0, shown.stderr
        value: dict[str, Any] = json.loads(shown.stdout)
        return value

    def refunds(self) -> list[str]:
        if not self.ledger.exists():
            return []
        return self.ledger.read_text(encoding="utf-8").splitlines()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def test_kill_9_of_a_worker_hands_the_waiting_run_to_the_other(
    temporal_address: str, workers: list[WorkerProcess], tmp_path: Path, db: str
) -> None:
    setup = Setup(tmp_path, temporal_address, db)
    first = setup.worker(workers)
    run_id = setup.start()
    waiting = setup.show(run_id)
    assert waiting["status"] == "awaiting_approval"  # (not `running`: it waits for a human)
    assert [c["tool"] for c in waiting["pending_calls"]] == ["refund"]
    second = setup.worker(workers)
    first.kill()

    wrong = setup.cli("runs", "approve", run_id, "--call", "call_99")
    assert wrong.returncode == 2
    assert "no call 'call_99' awaits a decision (waiting: call_3)" in wrong.stderr
    also_wrong = setup.cli("runs", "resume", run_id, "--retry")
    assert also_wrong.returncode == 2
    assert "awaiting_approval on call call_3: use runs approve or runs deny" in also_wrong.stderr
    assert setup.show(run_id)["status"] == "awaiting_approval"  # still waiting

    approved = setup.cli("runs", "approve", run_id, "--by", "mira")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "approved call_3 (refund) on Temporal" in approved.stdout
    assert "stopped: terminal_tool" in approved.stdout
    assert setup.refunds() == [f"refund O-5531 39.9 {second.process.pid}"]
    run = setup.show(run_id)
    assert (run["status"], run["stop_reason"], run["steps_count"]) == (
        "finished",
        "terminal_tool",
        7,
    )
    refund = next(
        c
        for s in run["steps"]
        for c in s["calls"]
        if c["tool"] == "refund" and c["status"] == "finished"
    )
    assert refund["result"].startswith("Refund RF-5531 of 39.90 EUR")
    decisions = setup.cli("runs", "show", run_id)
    assert "mira" in decisions.stdout  # the audit trail names the reviewer


def test_a_worker_whose_rule_file_changed_refuses_the_run(
    temporal_address: str, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    setup = Setup(tmp_path, temporal_address, f"sqlite:///{tmp_path / 'runs.db'}")
    first = setup.worker(workers)
    run_id = setup.start()
    first.stop()
    original = setup.file.read_text(encoding="utf-8")
    setup.file.write_text(original.replace("max_steps: 12", "max_steps: 11"), encoding="utf-8")
    changed = setup.worker(workers)

    # A query makes the worker replay the run's history: it refuses, naming both hashes.
    with pytest.raises(Exception, match="refuses the run rather than replay another machine"):
        asyncio.run(_query_waiting(temporal_address, run_id))
    assert setup.show(run_id)["status"] == "awaiting_approval"
    changed.stop()

    setup.file.write_text(original, encoding="utf-8")
    setup.worker(workers)
    assert asyncio.run(_query_waiting(temporal_address, run_id)) == {
        "stop_reason": "awaiting_approval",
        "call_id": "call_3",
    }
    approved = setup.cli("runs", "approve", run_id)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert setup.show(run_id)["status"] == "finished"
    assert len(setup.refunds()) == 1


async def _query_waiting(address: str, run_id: str) -> Any:
    from temporalio.client import Client

    client = await Client.connect(address)
    return await client.get_workflow_handle(run_id).query("waiting")


def test_a_refund_cut_off_by_a_killed_worker_waits_for_a_decision(
    temporal_address: str, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    setup = Setup(tmp_path, temporal_address, f"sqlite:///{tmp_path / 'runs.db'}")
    pool = [setup.worker(workers), setup.worker(workers)]
    run_id = setup.start()
    setup.hold.touch()  # the refund hangs once it has started
    approving = subprocess.Popen(
        [sys.executable, "-m", "engine", "runs", "approve", run_id, "--db", setup.db],
        env=setup.env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not setup.refunds():
        assert time.monotonic() < deadline, "the refund never started"
        time.sleep(0.05)
    pid = int(setup.refunds()[0].split()[-1])
    running = next(w for w in pool if w.process.pid == pid)
    survivor = next(w for w in pool if w is not running)
    running.kill()  # mid-refund: it may or may not have happened
    out, _ = approving.communicate(timeout=60)
    assert "stopped: awaiting_decision" in out, out
    assert "retry:   toolfsm runs resume" in out
    assert setup.show(run_id)["status"] == "awaiting_decision"

    setup.hold.unlink()
    retried = setup.cli("runs", "resume", run_id, "--retry")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "retrying call_3 (refund) on Temporal" in retried.stdout
    assert "stopped: terminal_tool" in retried.stdout
    run = setup.show(run_id)
    assert run["status"] == "finished"
    calls = [c for s in run["steps"] for c in s["calls"] if c["tool"] == "refund"]
    assert [c["status"] for c in calls] == ["violation", "finished"]
    # Run again, as decided: by a worker still alive.
    assert [line.split()[-1] for line in setup.refunds()] == [str(pid), str(survivor.process.pid)]
