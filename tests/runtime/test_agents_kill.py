"""A kill -9 during a fan-out (issue 13): `runs resume` on the caller resumes the callee that
had not finished and does not start the finished one again. Real processes, real SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _agents import write_agent

from engine.store import open_store
from engine.store.status import RunStatus

REPO = Path(__file__).resolve().parents[2]


def _cli(db: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "engine", *args, "--db", str(db)]


@pytest.mark.slow
def test_resume_after_a_kill_during_a_fan_out(tmp_path: Path) -> None:
    root = tmp_path / "team"
    log, gate = tmp_path / "log", tmp_path / "gate"
    for name, waits in (("fast", False), ("slow", True)):
        wait = f"    while not pathlib.Path({str(gate)!r}).exists():\n        time.sleep(0.01)\n"
        write_agent(
            root / name,
            f"version: 1\nagent: {name}\ntags: [w]\ntools:\n  - {{name: look, idempotent: true}}\n",
            tools=(
                "import pathlib, time\n\n\ndef look() -> str:\n"
                f"    with open({str(log)!r}, 'a') as f:\n        f.write({name!r} + '\\n')\n"
                + (wait if waits else "")
                + "    return 'looked'\n"
            ),
            replies=[{"call": "look"}, {"text": f"{name} ok"}],
        )
    boss = write_agent(
        root / "boss",
        """\
        version: 1
        agent: boss
        tools:
          - name: ask
            agents: {match_all: [w]}
          - done
        rules:
          - terminal: done
        run: {input: go}
        """,
        tools="def done() -> str:\n    return 'done'\n",
        replies=[{"call": "ask", "args": {"message": "look"}}, {"call": "done"}],
    )
    db = tmp_path / "runs.db"
    env = {**os.environ, "TOOLFSM_DB": str(db)}
    process = subprocess.Popen(
        _cli(db, "run", str(boss), "--agents", str(root)),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        while True:  # until the fast callee has finished and the slow one is in its tool
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
            if not db.exists() or not log.exists():
                continue
            store = open_store(str(db))
            try:
                kids = {r.agent_name: r for r in store.list_runs() if r.parent_run_id}
            finally:
                store.close()
            fast = kids.get("fast")
            if fast and fast.status is RunStatus.FINISHED and "slow" in log.read_text():
                break
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    store = open_store(str(db))
    try:
        (parent,) = [r for r in store.list_runs() if r.parent_run_id is None]
        assert parent.status is RunStatus.RUNNING  # killed: nobody stopped it
        fast_events = len(store.load_run(kids["fast"].id).steps)
    finally:
        store.close()

    gate.touch()
    resumed = subprocess.run(
        _cli(db, "runs", "resume", parent.id), cwd=REPO, env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    store = open_store(str(db))
    try:
        done = store.load_run(parent.id)
        assert (done.run.status, done.run.stop_reason) == ("finished", "terminal_tool")
        entries = json.loads(done.calls[0].result)
        assert [e["response"] for e in entries] == [["fast ok"], ["slow ok"]]
        # The finished callee was not started again; the other one was resumed (its
        # idempotent call cut off by the kill ran again).
        assert len(store.load_run(kids["fast"].id).steps) == fast_events
        assert store.get_run(kids["slow"].id).status is RunStatus.FINISHED
        assert len(store.list_runs(parent=parent.id)) == 2
    finally:
        store.close()
    assert log.read_text().split().count("fast") == 1
    assert log.read_text().split().count("slow") == 2
