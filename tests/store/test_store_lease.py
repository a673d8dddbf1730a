"""The run lease: one owner per run, claimed atomically, renewed, released, taken over."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from engine.store import (
    LeaseLost,
    RunClaimed,
    RunStore,
    new_owner_id,
    open_store,
)
from engine.store.migrate import alembic_config
from engine.store.records import utcnow
from engine.store.writes import AppendMessages, KeepLease, ReleaseLease
from tests.store.test_store_processes import spawn

TIMEOUT_S = 60


def _run(store: RunStore) -> str:
    agent = store.save_agent("leased", "tools: [lookup]\n")
    return store.create_run(agent.id, model="scripted:x", input="go").id


def _set_lease(store: RunStore, run_id: str, owner: str, expires_in_s: float) -> None:
    now = utcnow()
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE run SET owner = :owner, lease_renewed_at = :now, "
                "lease_expires_at = :expires WHERE id = :id"
            ),
            {
                "owner": owner,
                "now": now,
                "expires": now + timedelta(seconds=expires_in_s),
                "id": run_id,
            },
        )


def test_one_owner_at_a_time(store: RunStore) -> None:
    run_id = _run(store)
    assert store.get_run(run_id).owner is None
    first, second = new_owner_id(), new_owner_id()
    claimed = store.claim_run(run_id, first)
    assert claimed.owner == first
    assert claimed.lease_renewed_at is not None and claimed.lease_expires_at is not None
    assert claimed.lease_expires_at > claimed.lease_renewed_at
    assert store.claim_run(run_id, first).owner == first  # a claim again is a renewal
    with pytest.raises(RunClaimed) as refused:
        store.claim_run(run_id, second)
    assert refused.value.owner == first
    message = str(refused.value)
    assert f"run {run_id} is being run by another process ({first}, lease renewed " in message
    assert " s ago, lapses in " in message and "\n" not in message
    store.release_run(run_id, first)
    released = store.get_run(run_id)
    assert (released.owner, released.lease_renewed_at, released.lease_expires_at) == (
        None,
        None,
        None,
    )
    assert store.claim_run(run_id, second).owner == second


def test_a_lapsed_lease_is_taken_over(store: RunStore) -> None:
    run_id = _run(store)
    _set_lease(store, run_id, "elsewhere:4242:abcd", expires_in_s=-1)
    assert store.claim_run(run_id, "here:1:x").owner == "here:1:x"


def test_a_live_lease_of_another_host_is_respected(store: RunStore) -> None:
    run_id = _run(store)
    _set_lease(store, run_id, "elsewhere:4242:abcd", expires_in_s=30)
    with pytest.raises(RunClaimed, match=r"elsewhere:4242:abcd, lease renewed \d+ s ago"):
        store.claim_run(run_id, "here:1:x")


def test_the_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(
    store: RunStore,
) -> None:
    run_id = _run(store)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    owner = f"{socket.gethostname()}:{dead.stdout.strip()}:0000"
    _set_lease(store, run_id, owner, expires_in_s=30)
    assert store.claim_run(run_id, new_owner_id()).owner != owner


def test_writes_under_a_lost_lease_store_nothing(store: RunStore) -> None:
    run_id = _run(store)
    old, new = new_owner_id(), new_owner_id()
    store.claim_run(run_id, old)
    store.write(run_id, [KeepLease(old, 30), AppendMessages([{"role": "user"}])])
    _set_lease(store, run_id, "elsewhere:1:x", expires_in_s=-1)
    store.claim_run(run_id, new)  # took over: the old owner's writes are fenced off
    for fence in (KeepLease(old, 30), ReleaseLease(old)):
        with pytest.raises(LeaseLost) as lost:
            store.write(run_id, [AppendMessages([{"role": "assistant"}]), fence])
        assert lost.value.holder == new
        assert f"now held by {new}" in str(lost.value)
    assert [m.role for m in store.load_run(run_id).messages] == ["user"]
    assert store.get_run(run_id).owner == new


def test_racing_claimants_in_separate_processes_get_one_winner(
    store_url: str, tmp_path: Path
) -> None:
    with open_store(store_url) as store:
        run_id = _run(store)
    go = tmp_path / "go"
    children = [spawn("claim", store_url, run_id, str(go)) for _ in range(4)]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "READY"
        go.write_text("go")  # all of them claim at once
        answers = [child.stdout.readline().strip() for child in children if child.stdout]
    finally:
        Path(f"{go}.done").write_text("done")
        for child in children:
            child.communicate(timeout=TIMEOUT_S)
    won = [a for a in answers if a.startswith("WON ")]
    assert len(won) == 1, answers
    winner = won[0].split()[1]
    refused = [a for a in answers if a.startswith("REFUSED ")]
    assert len(refused) == 3, answers
    assert all(f"{socket.gethostname()}:{winner}:" in a for a in refused)


def test_an_old_database_upgrades_and_its_runs_can_be_claimed(empty_db_url: str) -> None:
    with open_store(empty_db_url) as store:
        run_id = _run(store)
        with store.engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0001")
    with open_store(empty_db_url) as store:  # upgrades to the lease columns
        run = store.get_run(run_id)
        assert run.owner is None and run.input == "go"
        assert store.claim_run(run_id, "here:1:x").owner == "here:1:x"
