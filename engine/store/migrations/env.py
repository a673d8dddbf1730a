"""Alembic environment for the run store, driven from code by `engine.store.migrate`.

There is no alembic.ini: the caller builds the Config and hands over an open connection (inside
the transaction that holds the migration lock) through `config.attributes["connection"]`.
"""

from __future__ import annotations

from alembic import context

from engine.store.tables import METADATA, VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the run store's migrations run from code: use engine.store.migrate.upgrade(engine) "
        "or scripts/new_migration.py"
    )

context.configure(
    connection=connection,
    target_metadata=METADATA,
    version_table=VERSION_TABLE,
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
