"""Child process for the crash and multi-process tests (run as a script, not collected).

store_child.py crash URL    commit a step, start a call, leave an append half done, wait
store_child.py writer URL N create a run and commit N steps to it, then print its id
store_child.py claim URL RUN GO   wait for the file GO, claim RUN, print WON or the refusal,
                                 stay alive until GO.done exists
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from engine.store import Append, open_store
from engine.store.db import WRITE_OPTION
from engine.store.errors import RunClaimed
from engine.store.ids import new_owner_id
from engine.store.records import utcnow
from engine.store.sql import _event_values
from tests.store._journal import append, committed, done, new_run, opened, started


def crash(url: str) -> None:
    store = open_store(url)
    owner = new_owner_id()  # this process: once it is killed, its lease is taken over
    run_id = new_run(store, f"crash-{os.getpid()}", owner=owner)
    reply = {"role": "assistant", "text": "ok"}
    append(store, run_id, committed(0, reply=reply), started(1, opened("call_0", 1)), owner=owner)
    # A step appended but never committed: what a kill in the middle of an append leaves
    # behind. It must vanish with the process.
    connection = store.engine.execution_options(**{WRITE_OPTION: True}).raw_connection()
    cursor = connection.cursor()
    if store.engine.dialect.name == "sqlite":
        cursor.execute("BEGIN IMMEDIATE")
    event = committed(1, done("call_0"))
    pending = Append(run_id, owner, [event])
    sql = store._sql.append_event(pending)
    values = _event_values(pending, 0, utcnow())
    params = sql.bind(values)
    cursor.execute(sql.sql, params)
    print(run_id, flush=True)
    print("READY", flush=True)
    time.sleep(120)  # killed long before this returns


def writer(url: str, steps: int) -> None:
    with open_store(url) as store:
        run_id = new_run(store, f"writer-{os.getpid()}", agent="shared")
        for seq in range(steps):
            append(
                store,
                run_id,
                committed(seq, opened(f"c{seq}", seq, tool="lookup"), done(f"c{seq}", seq)),
            )
        print(run_id, flush=True)


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
