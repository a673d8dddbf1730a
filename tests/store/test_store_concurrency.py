"""Many runs (threads) sharing one store; racing writers on one run lose cleanly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from engine.store import RunStore, StepRecord, StoreConflict

THREADS = 6
STEPS = 8


def step(seq: int) -> StepRecord:
    return StepRecord(
        seq=seq, position_before={"n": seq}, position_after={"n": seq + 1}, allowed=("t",)
    )


def test_parallel_runs_share_one_store(store: RunStore) -> None:
    agent = store.save_agent("parallel", "tools: [t]\n")

    def drive(index: int) -> str:
        run = store.create_run(agent.id, model="m:x", input=str(index))
        for seq in range(STEPS):
            store.commit_step(run.id, step(seq), messages=[{"role": "assistant", "n": seq}])
        return run.id

    with ThreadPoolExecutor(THREADS) as pool:
        run_ids = list(pool.map(drive, range(THREADS)))

    for run_id in run_ids:
        snapshot = store.load_run(run_id)
        assert [s.seq for s in snapshot.steps] == list(range(STEPS))
        assert [m.content["n"] for m in snapshot.messages] == list(range(STEPS))
        assert snapshot.run.position == {"n": STEPS}


def test_racing_writers_on_one_run_never_duplicate_a_step(store: RunStore) -> None:
    agent = store.save_agent("race", "tools: [t]\n")
    run = store.create_run(agent.id, model="m:x", input="")
    conflicts: list[StoreConflict] = []

    def contend(_worker: int) -> int:
        won = 0
        for seq in range(STEPS):
            try:
                store.commit_step(run.id, step(seq), messages=[{"role": "assistant"}])
                won += 1
            except StoreConflict as exc:  # anything else fails the test
                conflicts.append(exc)
        return won

    with ThreadPoolExecutor(THREADS) as pool:
        wins = sum(pool.map(contend, range(THREADS)))

    snapshot = store.load_run(run.id)
    assert wins == STEPS == snapshot.run.steps_count
    assert [s.seq for s in snapshot.steps] == list(range(STEPS))
    assert [m.seq for m in snapshot.messages] == list(range(STEPS))  # one per winning step
    assert len(conflicts) == THREADS * STEPS - STEPS
