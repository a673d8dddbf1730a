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

from engine.store import SqlStore, open_store
from engine.store.errors import LeaseLost, RunClaimed
from engine.store.ids import new_owner_id
from engine.store.migrate import alembic_config
from engine.store.records import utcnow
from tests.store._journal import append, committed, new_run, stopped
from tests.store.test_store_processes import spawn

TIMEOUT_S = 60


def _run(store: SqlStore) -> str:
    run_id = new_run(store, new_owner_id().replace(":", "-").lower()[-8:] + "-run")
    append(store, run_id, stopped(0), release=True)  # nobody holds it now
    return run_id


def _set_lease(store: SqlStore, run_id: str, owner: str, expires_in_s: float) -> None:
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


def test_one_owner_at_a_time(store: SqlStore) -> None:
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


def test_a_lapsed_lease_is_taken_over(store: SqlStore) -> None:
    run_id = _run(store)
    _set_lease(store, run_id, "elsewhere:4242:abcd", expires_in_s=-1)
    assert store.claim_run(run_id, "here:1:x").owner == "here:1:x"


def test_a_live_lease_of_another_host_is_respected(store: SqlStore) -> None:
    run_id = _run(store)
    _set_lease(store, run_id, "elsewhere:4242:abcd", expires_in_s=30)
    with pytest.raises(RunClaimed, match=r"elsewhere:4242:abcd, lease renewed \d+ s ago"):
        store.claim_run(run_id, "here:1:x")


def test_the_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(
    store: SqlStore,
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


def test_appends_under_a_lost_lease_store_nothing(store: SqlStore) -> None:
    old, new = new_owner_id(), new_owner_id()
    run_id = new_run(store, owner=old)
    append(store, run_id, committed(0), owner=old)
    store.renew_lease(run_id, old)
    _set_lease(store, run_id, "elsewhere:1:x", expires_in_s=-1)
    store.claim_run(run_id, new)  # took over: the old owner's appends are fenced off
    for kw in ({}, {"lease_seconds": 30.0}, {"release": True}):
        with pytest.raises(LeaseLost) as lost:
            append(store, run_id, committed(1), owner=old, **kw)
        assert lost.value.holder == new
        assert f"now held by {new}" in str(lost.value)
    for call in (store.renew_lease, store.release_run):
        with pytest.raises(LeaseLost):
            call(run_id, old)
    assert [s.seq for s in store.load_run(run_id).steps] == [0]
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
