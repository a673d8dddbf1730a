"""Real processes: a SIGKILLed writer leaves exactly its committed data; two writers share
one SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.store import open_store
from engine.store.status import CallStatus
from tests.store._journal import append, committed, done

CHILD = Path(__file__).with_name("store_child.py")
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_killed_process_leaves_only_committed_data(store_url: str) -> None:
    child = spawn("crash", store_url)
    try:
        assert child.stdout is not None
        run_id = child.stdout.readline().strip()
        ready = child.stdout.readline().strip()
        if ready != "READY":
            child.kill()
            _, err = child.communicate(timeout=TIMEOUT_S)
            pytest.fail(f"child did not get ready: {run_id!r} {ready!r}\n{err}")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=TIMEOUT_S)
        assert child.returncode == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()

    with open_store(store_url) as store:
        snapshot = store.load_run(run_id)
        assert [step.seq for step in snapshot.steps] == [0]
        assert snapshot.run.steps_count == 1
        assert snapshot.run.position == {"state": "s1"}
        assert [m.content["text"] for m in snapshot.messages] == ["go", "ok"]
        (pending,) = store.load_run(run_id).pending_calls
        assert (pending.call_id, pending.status) == ("call_0", CallStatus.STARTED)
        # The store is fully usable after the crash: the half-written step 1 can be redone
        # (the dead writer's lease is taken over at once).
        store.claim_run(run_id, "here:1:x")
        append(store, run_id, committed(1, done("call_0")), owner="here:1:x")
        assert store.load_run(run_id).run.steps_count == 2


def test_two_processes_write_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    steps = 15
    children = [spawn("writer", url, str(steps)) for _ in range(2)]
    run_ids = []
    for child in children:
        out, err = child.communicate(timeout=TIMEOUT_S)
        assert child.returncode == 0, err
        run_ids.append(out.strip())

    with open_store(url) as store:
        for run_id in run_ids:
            snapshot = store.load_run(run_id)
            assert [s.seq for s in snapshot.steps] == list(range(steps))
            assert [m.seq for m in snapshot.messages] == list(range(steps + 1))
            assert all(c.status is CallStatus.FINISHED for c in snapshot.calls)
        assert len(store.list_runs(agent="shared")) == 2
