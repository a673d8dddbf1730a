"""The run lease: run.owner, run.lease_renewed_at, run.lease_expires_at.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add the three nullable lease columns (existing runs have no owner)."""
    # Nullable columns without a default: SQLite adds them with ALTER TABLE ADD COLUMN, no
    # table copy needed (batch mode is for changes SQLite cannot ALTER).
    op.add_column("run", sa.Column("owner", sa.String(length=128), nullable=True))
    op.add_column("run", sa.Column("lease_renewed_at", _TIMESTAMP, nullable=True))
    op.add_column("run", sa.Column("lease_expires_at", _TIMESTAMP, nullable=True))


def downgrade() -> None:
    """Drop the lease columns.

    Not in batch mode: that copies the table and drops the old one, and with foreign keys on
    dropping `run` would cascade into every step, call and message. SQLite 3.35+ drops a
    column in place.
    """
    op.drop_column("run", "lease_expires_at")
    op.drop_column("run", "lease_renewed_at")
    op.drop_column("run", "owner")
