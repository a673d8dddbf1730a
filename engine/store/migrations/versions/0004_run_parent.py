"""Callee runs: run.parent_run_id, run.parent_call_id, run.depth.

A run started by another run's agent tool names its caller's run and call, and how deep it
nests; every run before this revision was nobody's callee (NULL, NULL, 0).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the three columns (nullable, or with a default: no table copy on SQLite) and an
    index on the parent, which `runs show` lists a call's callees by."""
    op.add_column("run", sa.Column("parent_run_id", sa.String(length=64), nullable=True))
    op.add_column("run", sa.Column("parent_call_id", sa.String(), nullable=True))
    op.add_column(
        "run", sa.Column("depth", sa.Integer(), nullable=False, server_default=sa.text("0"))
    )
    op.create_index("ix_run_parent_run_id", "run", ["parent_run_id"])


def downgrade() -> None:
    """Drop them (SQLite 3.35+ drops a column in place)."""
    op.drop_index("ix_run_parent_run_id", table_name="run")
    op.drop_column("run", "depth")
    op.drop_column("run", "parent_call_id")
    op.drop_column("run", "parent_run_id")
