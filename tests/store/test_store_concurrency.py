"""Many runs (threads) sharing one store."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from engine.store import SqlStore
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
