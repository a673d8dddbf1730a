"""Draft a run-store migration: `python scripts/new_migration.py "what changed"`.

Autogenerates a revision in engine/store/migrations/versions against a scratch SQLite database
migrated to head (see engine/store/migrations/README.md). A developer's tool: it is not part
of the installed package.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.store.db import make_engine
from engine.store.migrate import alembic_config, upgrade


def make_revision(message: str) -> None:
    """Draft a new revision from the difference between the tables and head."""
    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{Path(scratch) / 'scratch.db'}")
        try:
            upgrade(engine)
            with engine.begin() as connection:
                command.revision(alembic_config(connection), message=message, autogenerate=True)
        finally:
            engine.dispose()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print('usage: python scripts/new_migration.py "what changed"', file=sys.stderr)
        return 2
    make_revision(argv[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
