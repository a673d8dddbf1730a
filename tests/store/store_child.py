"""Child process for the crash and multi-process tests (run as a script, not collected).

store_child.py crash URL    commit a step, start a call, leave a write half done, wait
store_child.py writer URL N create a run and commit N steps to it, then print its id
store_child.py claim URL RUN GO   wait for the file GO, claim RUN, print WON or the refusal,
                                 stay alive until GO.done exists
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from sqlalchemy.orm import Session

from engine.store import RunClaimed, StepRecord, new_owner_id, open_store
from engine.store.db import WRITE_OPTION
from engine.store.tables import MessageRow, StepRow


def step(seq: int) -> StepRecord:
    return StepRecord(
        seq=seq,
        position_before={"state": f"s{seq}"},
        position_after={"state": f"s{seq + 1}"},
        allowed=("lookup",),
    )


def crash(url: str) -> None:
    store = open_store(url)
    agent = store.save_agent("crashy", "tools: [lookup]\n")
    run = store.create_run(agent.id, model="scripted:x", input="go", position={"state": "s0"})
    store.commit_step(
        run.id,
        step(0),
        messages=[{"role": "user", "content": "go"}, {"role": "assistant", "content": "ok"}],
    )
    store.record_call_started(
        run.id, "call_0", step_seq=0, batch_index=0, tool="lookup", arguments_raw="{}"
    )
    # A second step written but never committed: what a kill in the middle of commit_step
    # leaves behind. It must vanish with the process.
    session = Session(store.engine.execution_options(**{WRITE_OPTION: True}))
    session.add(
        StepRow(
            run_id=run.id,
            seq=1,
            allowed=["lookup"],
            force=False,
            started_at=step(1).started_at,
            finished_at=step(1).started_at,
        )
    )
    session.add(
        MessageRow(
            run_id=run.id,
            seq=2,
            role="assistant",
            content={"role": "assistant"},
            created_at=step(1).started_at,
        )
    )
    session.flush()
    print(run.id, flush=True)
    print("READY", flush=True)
    time.sleep(120)  # killed long before this returns


def writer(url: str, steps: int) -> None:
    with open_store(url) as store:
        agent = store.save_agent("shared", "tools: [lookup]\n")
        run = store.create_run(agent.id, model="scripted:x", input="go")
        for seq in range(steps):
            store.commit_step(run.id, step(seq), messages=[{"role": "assistant", "n": seq}])
            store.record_call_started(
                run.id, f"c{seq}", step_seq=seq, batch_index=0, tool="lookup", arguments_raw=""
            )
            store.record_call_finished(
                run.id, f"c{seq}", status="finished", result=seq, is_error=False
            )
        print(run.id, flush=True)


def claim(url: str, run_id: str, go: str) -> None:
    with open_store(url) as store:
        store.get_run(run_id)  # connected and migrated: only the claim is left to race
        print("READY", flush=True)
        while not Path(go).exists():
            time.sleep(0.001)
        try:
            store.claim_run(run_id, new_owner_id())
        except RunClaimed as exc:
            print(f"REFUSED {exc}", flush=True)
        else:
            print(f"WON {os.getpid()}", flush=True)
        # Alive until every claimant has tried: a dead owner's lease may be taken over.
        while not Path(go + ".done").exists():
            time.sleep(0.005)


if __name__ == "__main__":
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "crash":
        crash(url)
    elif mode == "claim":
        claim(url, sys.argv[3], sys.argv[4])
    else:
        writer(url, int(sys.argv[3]))
