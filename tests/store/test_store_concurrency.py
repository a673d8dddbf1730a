"""Many runs (threads) sharing one store."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from engine.store import SqlStore, open_store
from tests.store._journal import append, committed, new_run

THREADS = 6
STEPS = 8


def test_parallel_runs_share_one_store(store: SqlStore) -> None:
    def drive(index: int) -> str:
        run_id = new_run(store, f"parallel-{index}")
        for seq in range(STEPS):
            append(store, run_id, committed(seq, reply={"role": "assistant", "n": seq}))
        return run_id

    with ThreadPoolExecutor(THREADS) as pool:
        run_ids = list(pool.map(drive, range(THREADS)))

    for run_id in run_ids:
        snapshot = store.load_run(run_id)
        assert [s.seq for s in snapshot.steps] == list(range(STEPS))
        assert [m.content.get("n") for m in snapshot.messages[1:]] == list(range(STEPS))
        assert snapshot.run.position == {"state": f"s{STEPS}"}


def test_a_step_append_waits_out_another_connections_write(tmp_path: Path) -> None:
    # A step's event is committed by its one statement, without BEGIN IMMEDIATE: it too must
    # wait for the lock on the busy timeout (another process writing), not fail with
    # "database is locked".
    path = tmp_path / "shared.db"
    with open_store(f"sqlite:///{path}") as store:
        run_id = new_run(store)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        outcome: dict[str, object] = {}

        def write() -> None:
            try:
                append(store, run_id, committed(0))
                outcome["written"] = True
            except Exception as exc:  # reported by the assertions below
                outcome["error"] = exc

        writer = threading.Thread(target=write)
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive(), outcome  # still waiting for the lock, not failed
        other.execute("COMMIT")
        other.close()
        writer.join()
        assert outcome == {"written": True}
        assert [step.seq for step in store.load_run(run_id).steps] == [0]
