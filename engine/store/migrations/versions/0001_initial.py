"""Initial run store schema: agent, run, step, tool_call, message.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A revision is a frozen record of the schema at that point, so it spells out its types
# instead of importing them from engine.store.tables (which will keep changing).
_JSON = sa.JSON(none_as_null=True)
_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the five tables."""
    op.create_table(
        "agent",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("rules_text", sa.Text(), nullable=False),
        sa.Column("rules_hash", sa.String(length=64), nullable=False),
        sa.Column("rules_path", sa.Text(), nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agent"),
        sa.UniqueConstraint("name", "rules_hash", name="uq_agent_name_rules_hash"),
    )
    op.create_table(
        "run",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("rules_hash", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("options", _JSON, nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("stop_reason", sa.String(), nullable=True),
        sa.Column("position", _JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("steps_count", sa.Integer(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("updated_at", _TIMESTAMP, nullable=False),
        sa.Column("finished_at", _TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], name="fk_run_agent_id_agent"),
        sa.PrimaryKeyConstraint("id", name="pk_run"),
    )
    op.create_index("ix_run_agent_id", "run", ["agent_id"])
    op.create_index("ix_run_status", "run", ["status"])
    op.create_index("ix_run_created_at", "run", ["created_at"])
    op.create_table(
        "step",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("position_before", _JSON, nullable=True),
        sa.Column("position_after", _JSON, nullable=True),
        sa.Column("allowed", _JSON, nullable=False),
        sa.Column("force", sa.Boolean(), nullable=False),
        sa.Column("forced_tool", sa.String(), nullable=True),
        sa.Column("tool_choice", _JSON, nullable=True),
        sa.Column("reply", _JSON, nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("started_at", _TIMESTAMP, nullable=False),
        sa.Column("finished_at", _TIMESTAMP, nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["run.id"], name="fk_step_run_id_run", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_step"),
    )
    op.create_table(
        "tool_call",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("step_seq", sa.Integer(), nullable=False),
        sa.Column("batch_index", sa.Integer(), nullable=False),
        sa.Column("tool", sa.String(), nullable=False),
        sa.Column("arguments_raw", sa.Text(), nullable=False),
        sa.Column("arguments", _JSON, nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("result", _JSON, nullable=True),
        sa.Column("is_error", sa.Boolean(), nullable=False),
        sa.Column("violation", sa.Text(), nullable=True),
        sa.Column("side_effects", sa.Boolean(), nullable=False),
        sa.Column("started_at", _TIMESTAMP, nullable=False),
        sa.Column("finished_at", _TIMESTAMP, nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["run.id"], name="fk_tool_call_run_id_run", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "call_id", name="pk_tool_call"),
    )
    op.create_table(
        "message",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("content", _JSON, nullable=False),
        sa.Column("step_seq", sa.Integer(), nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["run.id"], name="fk_message_run_id_run", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_message"),
    )


def downgrade() -> None:
    """Drop the five tables (children first)."""
    op.drop_table("message")
    op.drop_table("tool_call")
    op.drop_table("step")
    op.drop_index("ix_run_created_at", table_name="run")
    op.drop_index("ix_run_status", table_name="run")
    op.drop_index("ix_run_agent_id", table_name="run")
    op.drop_table("run")
    op.drop_table("agent")
