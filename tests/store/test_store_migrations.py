"""Migrations create the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, text

from engine.store import StoreUnavailable, open_store
from engine.store.migrate import alembic_config, current_revision, head_revision, schema_diffs
from engine.store.tables import METADATA, VERSION_TABLE


def test_migrations_create_the_schema(empty_db_url: str) -> None:
    with open_store(empty_db_url) as store, store.engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        assert tables == {"agent", "run", "step", "tool_call", "message", VERSION_TABLE}
        assert current_revision(connection) == head_revision()


def test_migrations_match_models(empty_db_url: str) -> None:
    with open_store(empty_db_url) as store, store.engine.connect() as connection:
        assert schema_diffs(connection) == []


def test_schema_comparison_catches_drift(empty_db_url: str) -> None:
    # Guards the test above against passing vacuously (e.g. comparing to an empty metadata).
    assert set(METADATA.tables) == {"agent", "run", "step", "tool_call", "message"}
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
