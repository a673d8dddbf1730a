"""Migrations create the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text

from engine.store import open_store
from engine.store.errors import StoreUnavailable
from engine.store.migrate import alembic_config, current_revision, head_revision, schema_diffs
from engine.store.tables import METADATA, VERSION_TABLE


def test_migrations_create_the_schema(empty_db_url: str) -> None:
    with open_store(empty_db_url) as store, store.engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        assert tables == {"agent", "run", "run_event", VERSION_TABLE}
        assert current_revision(connection) == head_revision()


def test_migrations_match_models(empty_db_url: str) -> None:
    with open_store(empty_db_url) as store, store.engine.connect() as connection:
        assert schema_diffs(connection) == []


def test_schema_comparison_catches_drift(empty_db_url: str) -> None:
    # Guards the test above against passing vacuously (e.g. comparing to an empty metadata).
    assert set(METADATA.tables) == {"agent", "run", "run_event"}
    with open_store(empty_db_url) as store:
        with store.engine.begin() as connection:
            connection.execute(text("ALTER TABLE run ADD COLUMN stray TEXT"))
            connection.execute(text("DROP INDEX ix_run_status"))
        with store.engine.connect() as connection:
            diffs = schema_diffs(connection)
    kinds = {diff[0] for diff in diffs}
    assert {"remove_column", "add_index"} <= kinds


def test_opening_twice_does_not_migrate_again(empty_db_url: str) -> None:
    open_store(empty_db_url).close()
    with open_store(empty_db_url) as store, store.engine.connect() as connection:
        assert current_revision(connection) == head_revision()


def test_downgrade_to_base_and_back(empty_db_url: str) -> None:
    with open_store(empty_db_url) as store:
        with store.engine.begin() as connection:
            command.downgrade(alembic_config(connection), "base")
        with store.engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) <= {VERSION_TABLE}
    with open_store(empty_db_url) as store, store.engine.connect() as connection:
        assert schema_diffs(connection) == []


def test_schema_from_a_newer_toolfsm_is_refused(empty_db_url: str) -> None:
    with open_store(empty_db_url) as store, store.engine.begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'ffff_future'"))
    with pytest.raises(StoreUnavailable, match="newer toolfsm") as caught:
        open_store(empty_db_url)
    assert "ffff_future" in str(caught.value)


T0 = "2026-12-01 10:00:00.000000"
T1 = "2026-12-01 10:00:01.000000"
T2 = "2026-12-01 10:00:02.000000"
T3 = "2026-12-01 10:00:03.000000"


def _old_rows(connection: Any) -> None:
    """A run as toolfsm 0.1 (revision 0002) wrote it: one committed step with an idempotent
    call, and a pending step whose reply is stored and whose side-effect call started."""
    rows = {
        "agent": [{"id": 1, "name": "pay", "rules_text": "x", "rules_hash": "h", "created_at": T0}],
        "run": [
            {
                "id": "old-run",
                "agent_id": 1,
                "rules_hash": "h",
                "model": "scripted:s.yaml",
                "input": "go",
                "options": '{"tools": "tools.py"}',
                "status": "running",
                "stop_reason": None,
                "position": '{"node": "after:lookup"}',
                "error": None,
                "input_tokens": 7,
                "output_tokens": 3,
                "steps_count": 1,
                "created_at": T0,
                "updated_at": T1,
                "finished_at": None,
                "owner": "gone-host:1:x",
                "lease_renewed_at": T2,
                "lease_expires_at": T2,
            }
        ],
        "step": [
            {
                "run_id": "old-run",
                "seq": 0,
                "position_before": '{"node": "start"}',
                "position_after": '{"node": "after:lookup"}',
                "allowed": '["lookup", "charge"]',
                "force": False,
                "forced_tool": None,
                "tool_choice": None,
                "reply": '{"role": "assistant", "n": 0}',
                "decision": "continue",
                "reason": "tool_call",
                "started_at": T0,
                "finished_at": T1,
                "input_tokens": 7,
                "output_tokens": 3,
            }
        ],
        "tool_call": [
            _old_call("c1", 0, "lookup", T0, T1, "finished", '{"balance": 1}', False),
            _old_call("c2", 1, "charge", T2, None, "started", None, True),
        ],
        "message": [
            _old_message(0, "user", None, T0),
            _old_message(1, "assistant", 0, T0),
            _old_message(2, "tool", 0, T1),
            _old_message(3, "assistant", 1, T2),
        ],
    }
    for table, values in rows.items():
        for row in values:
            names = ", ".join(row)
            marks = ", ".join(f":{name}" for name in row)
            connection.execute(text(f"INSERT INTO {table} ({names}) VALUES ({marks})"), row)


def _old_call(
    call_id: str,
    step: int,
    tool: str,
    started: str,
    done: str | None,
    status: str,
    result: str | None,
    side_effects: bool,
) -> dict[str, Any]:
    return {
        "run_id": "old-run",
        "call_id": call_id,
        "step_seq": step,
        "batch_index": 0,
        "tool": tool,
        "arguments_raw": "{}",
        "arguments": "{}",
        "status": status,
        "result": result,
        "is_error": False,
        "violation": None,
        "side_effects": side_effects,
        "started_at": started,
        "finished_at": done,
        "duration_ms": 5 if done else None,
    }


def _old_message(seq: int, role: str, step: int | None, at: str) -> dict[str, Any]:
    content = json.dumps({"role": role, "n": seq if role != "assistant" else (step or 0)})
    return {
        "run_id": "old-run",
        "seq": seq,
        "role": role,
        "content": content,
        "step_seq": step,
        "created_at": at,
    }


def test_0003_turns_the_old_tables_into_the_journal(empty_db_url: str) -> None:
    with open_store(empty_db_url) as store:
        with store.engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0002")
        with store.engine.begin() as connection:
            _old_rows(connection)
    with open_store(empty_db_url) as store:  # upgrades to the journal
        with store.engine.connect() as connection:
            assert schema_diffs(connection) == []
        snapshot = store.load_run("old-run")
    run = snapshot.run
    assert (run.status, run.steps_count, run.input_tokens, run.position) == (
        "running",
        1,
        7,
        {"node": "after:lookup"},
    )
    assert run.updated_at == datetime(2026, 12, 1, 10, 0, 1, tzinfo=UTC)
    (step,) = snapshot.steps
    assert (step.reply, step.allowed, step.finished_at) == (
        {"role": "assistant", "n": 0},
        ("lookup", "charge"),
        datetime(2026, 12, 1, 10, 0, 1, tzinfo=UTC),
    )
    assert [(m.seq, m.role, m.step_seq, m.content["n"]) for m in snapshot.messages] == [
        (0, "user", None, 0),
        (1, "assistant", 0, 0),
        (2, "tool", 0, 2),
        (3, "assistant", 1, 1),
    ]
    assert [m.created_at.second for m in snapshot.messages] == [0, 0, 1, 2]
    lookup, charge = snapshot.calls
    assert (lookup.status, lookup.result, lookup.duration_ms) == ("finished", {"balance": 1}, 5)
    assert (lookup.started_at.second, lookup.finished_at and lookup.finished_at.second) == (0, 1)
    assert (charge.status, charge.side_effects, charge.is_pending) == ("started", True, True)
    assert charge.started_at.second == 2
    from engine.runtime.resume import pending_reply

    pending = pending_reply(snapshot)
    assert pending is not None and pending.seq == 3
