"""Schema migrations, run from code: `upgrade(engine)` brings a database to the newest revision.

The Alembic scripts ship inside the package (`engine/store/migrations/`) and the Config is
built here, so an installed toolfsm needs no alembic.ini and no working directory. Migration
holds a lock for its whole transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory
lock), so two processes opening a fresh database at once migrate it exactly once.

Run `python scripts/new_migration.py "message"` to draft a new revision.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from engine.store.db import WRITE_OPTION
from engine.store.tables import METADATA, VERSION_TABLE

__all__ = ["MIGRATIONS_DIR", "current_revision", "head_revision", "schema_diffs", "upgrade"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Any constant works; it only has to be the same in every toolfsm process. ("toolfsm" as
# ASCII bytes, so a DBA who sees it in pg_locks can guess whose lock it is.)
_PG_MIGRATION_LOCK = 0x746F6F6C66736D


def alembic_config(connection: Connection | None = None) -> Config:
    """Build the Alembic Config in code; `connection` is handed to env.py when given."""
    config = Config()
    # configparser interpolation would eat a '%' in the install path.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """Return the newest revision shipped with this package (read once per process)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships a revision
        raise RuntimeError(f"no migration scripts found in {MIGRATIONS_DIR}")
    return head


def current_revision(connection: Connection) -> str | None:
    """Return the database's revision, or None for a database the store never touched."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade(engine: Engine) -> None:
    """Migrate the database to the newest revision, under a lock; a no-op when current.

    Raises alembic's CommandError when the database carries a revision this package does not
    know (written by a newer toolfsm); `open_store` turns that into `StoreUnavailable`.
    """
    with engine.execution_options(**{WRITE_OPTION: True}).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
            )
        # Checked under the lock: the process that waited sees the first one's work.
        if current_revision(connection) == head_revision():
            return
        command.upgrade(alembic_config(connection), "head")


def schema_diffs(connection: Connection) -> list[Any]:
    """Return Alembic's differences between the live schema and the tables (empty: in sync)."""
    context = MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE, "compare_type": True}
    )
    return list(compare_metadata(context, METADATA))
