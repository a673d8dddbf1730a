"""`Store.append`, the one write: fenced by the lease, all of an append or none of it, and
many runs in one transaction without one run's failure undoing another's."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from sqlalchemy import text

from engine.store import Append, SqlStore
from engine.store.errors import CallNotFound, InvalidValue, LeaseLost, RunNotFound, StoreConflict
from engine.store.events import Decided
from tests.store._journal import OWNER, append, committed, new_run, opened, started, stopped

STRANGER = "elsewhere:9:stranger"


def _events(store: SqlStore, run_id: str) -> list[tuple[int, str]]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT seq, kind FROM run_event WHERE run_id = :r ORDER BY seq"), {"r": run_id}
        )
        return [(row[0], row[1]) for row in rows]


def test_events_are_numbered_in_order(store: SqlStore) -> None:
    run_id = new_run(store)
    append(store, run_id, started(0, opened("c0", 0)), committed(0))
    append(store, run_id, committed(1), stopped(2), release=True)
    assert _events(store, run_id) == [
        (0, "run_created"),
        (1, "calls_started"),
        (2, "step_committed"),
        (3, "step_committed"),
        (4, "stopped"),
    ]


def test_the_lease_holder_may_number_its_events(store: SqlStore) -> None:
    # A run's journal numbers its appends itself (`Append.seq`): the store takes the numbers
    # as given, and the snapshot says which comes next.
    run_id = new_run(store)
    assert store.load_run(run_id).next_event == 1
    append(store, run_id, started(0, opened("c0", 0)), committed(0), seq=1)
    append(store, run_id, stopped(1), seq=3, release=True)
    assert _events(store, run_id) == [
        (0, "run_created"),
        (1, "calls_started"),
        (2, "step_committed"),
        (3, "stopped"),
    ]
    assert store.load_run(run_id).next_event == 4


@pytest.mark.parametrize("plain", [True, False], ids=["executemany", "one-by-one"])
def test_a_number_already_taken_is_a_conflict_and_writes_nothing(
    store: SqlStore, plain: bool
) -> None:
    ids = [new_run(store, f"n{i}") for i in range(3)]
    append(store, "n1", committed(0), seq=1)
    # n1's writer is wrong about its next number (1 is taken): that append alone is undone.
    appends = [Append(run_id, OWNER, [committed(0 if plain else 1)], seq=1) for run_id in ids]
    if not plain:  # a stop is written one by one (it changes the header)
        appends = [Append(run_id, OWNER, [stopped(1)], seq=1) for run_id in ids]
    errors = store.append(appends)
    assert [type(e).__name__ if e else None for e in errors] == [None, "StoreConflict", None]
    assert _events(store, "n1") == [(0, "run_created"), (1, "step_committed")]
    assert [len(_events(store, run_id)) for run_id in ids] == [2, 2, 2]


def test_only_the_lease_holder_appends(store: SqlStore) -> None:
    run_id = new_run(store)
    with pytest.raises(LeaseLost, match=f"this process \\({STRANGER}\\) no longer holds") as lost:
        append(store, run_id, committed(0), owner=STRANGER)
    assert lost.value.holder == OWNER
    for kw in ({"lease_seconds": 30.0}, {"release": True}, {}):
        with pytest.raises(LeaseLost):
            append(store, run_id, owner=STRANGER, **kw)
    with pytest.raises(RunNotFound):
        append(store, "ghost", committed(0))
    assert _events(store, run_id) == [(0, "run_created")]
    assert store.get_run(run_id).owner == OWNER


def test_after_a_release_nothing_more_is_appended(store: SqlStore) -> None:
    run_id = new_run(store)
    append(store, run_id, stopped(0), release=True)
    with pytest.raises(LeaseLost, match="now released"):
        append(store, run_id, committed(0))
    assert store.get_run(run_id).owner is None


def test_an_append_is_all_or_nothing(store: SqlStore) -> None:
    run_id = new_run(store)
    bogus = Decided(call="ghost", decision="approve")
    with pytest.raises(CallNotFound):
        append(store, run_id, committed(0), bogus)
    # A value the store cannot keep as JSON: refused with the run's id, nothing written.
    draft = {
        "kind": "step_committed",
        "version": 1,
        "step": committed(0).step.model_dump(),
        "messages": [{"role": "tool", "x": {1, 2}}],
    }
    with pytest.raises(InvalidValue, match="run run-1: cannot record an event"):
        append(store, run_id, committed(0), draft)
    assert _events(store, run_id) == [(0, "run_created")]
    assert store.load_run(run_id).run.steps_count == 0


def test_a_draft_of_a_header_event_is_validated(store: SqlStore) -> None:
    run_id = new_run(store)
    with pytest.raises(InvalidValue, match=r"a 'stopped' event: stopped\.totals: Field required"):
        append(store, run_id, {"kind": "stopped", "version": 1, "status": "finished"})
    append(store, run_id, stopped(0).model_dump(mode="json"), release=True)
    assert store.get_run(run_id).status == "finished"


def _group(store: SqlStore, ids: list[str], bad: str, event: Any) -> list[Any]:
    appends = [
        Append(run_id, STRANGER if run_id == bad else OWNER, [event(run_id)]) for run_id in ids
    ]
    return store.append(appends)


@pytest.mark.parametrize("plain", [True, False], ids=["executemany", "one-by-one"])
def test_a_group_commit_undoes_only_the_failing_appends(store: SqlStore, plain: bool) -> None:
    ids = [new_run(store, f"g{i}") for i in range(4)]
    # Plain step commits go in one executemany; stops (header changes) one by one. Either
    # way the failing run is found and only its events are undone.
    make = (lambda _: committed(0)) if plain else (lambda _: stopped(0))
    errors = _group(store, ids, "g2", make)
    assert [type(e).__name__ if e else None for e in errors] == [None, None, "LeaseLost", None]
    for run_id in ids:
        expected = 1 if run_id == "g2" else 2
        assert len(_events(store, run_id)) == expected, run_id


def test_racing_appends_to_one_run_never_share_a_number(store: SqlStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    run_id = new_run(store)
    conflicts: list[StoreConflict] = []

    def contend(seq: int) -> None:
        try:
            append(store, run_id, committed(seq))
        except StoreConflict as exc:  # PostgreSQL: two appends read the same last number
            conflicts.append(exc)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(contend, range(24)))
    numbers = [seq for seq, _ in _events(store, run_id)]
    assert numbers == list(range(len(numbers)))
    assert len(numbers) + len(conflicts) == 25


def test_the_write_path_stores_values_as_the_orm_does(store: SqlStore) -> None:
    # The append path binds through the column types' own dialect processors, so a time it
    # writes (run.created_at, run_event.at) has the form the ORM gives one (agent.created_at).
    run_id = new_run(store)
    with store.engine.connect() as connection:
        query = (
            "SELECT CAST(a.created_at AS TEXT), CAST(r.created_at AS TEXT), CAST(e.at AS TEXT), "
            "CAST(r.options AS TEXT) FROM agent a JOIN run r ON r.agent_id = a.id "
            "JOIN run_event e ON e.run_id = r.id WHERE r.id = :r"
        )
        orm, header, event, options = connection.execute(text(query), {"r": run_id}).one()
    # Compared by shape: PostgreSQL prints a time's fraction without its trailing zeros (and
    # none at all at a whole second), so the lengths of two correct times may differ there.
    assert _shape(orm) == _shape(header) == _shape(event), (orm, header, event)
    assert json.loads(options) == {}
    assert store.get_run(run_id).created_at.tzinfo is not None


def _shape(time_text: str) -> str:
    """A stored time's form with its digits and fraction blurred: what the ORM and the write
    path must agree on (the zone suffix, the separators), not the instant."""
    return re.sub(r"\d+", "9", re.sub(r"\.\d+", "", time_text))
