"""SQLModel tables of the run store.

Every column spells out its SQL type and nullability instead of relying on SQLModel's
inference, because the Alembic migrations are written by hand against these definitions and a
test compares the two (`compare_metadata`) on SQLite and PostgreSQL.

The tables live in their own `MetaData` (not `SQLModel.metadata`) so that other SQLModel tables
imported in the same process never leak into the store's migrations or schema comparison.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

__all__ = [
    "METADATA",
    "VERSION_TABLE",
    "AgentRow",
    "RunEventRow",
    "RunRow",
]

# Deterministic constraint names: SQLite can only alter a constraint through Alembic's batch
# mode if it has a name, and identical names on both backends keep migrations portable.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
METADATA = MetaData(naming_convention=NAMING_CONVENTION)

# Alembic's default `alembic_version` would collide with a host application's migrations when
# TOOLFSM_DB points at a shared database; a prefixed name keeps the two histories apart.
VERSION_TABLE = "toolfsm_alembic_version"

# SQL NULL (not JSON 'null') for absent JSON values, so `IS NULL` filters work.
_JSON = JSON(none_as_null=True)
_TIMESTAMP = DateTime(timezone=True)


class _Table(SQLModel, registry=registry(metadata=METADATA)):
    """Base of the store's tables, bound to the store's own metadata."""


class AgentRow(_Table, table=True):
    """An agent's rule file; one row per distinct (name, rules_hash), never updated."""

    __tablename__ = "agent"
    __table_args__ = (UniqueConstraint("name", "rules_hash"),)

    id: int | None = Field(default=None, sa_type=Integer, primary_key=True)
    name: str = Field(sa_type=String, nullable=False)
    rules_text: str = Field(sa_type=Text, nullable=False)
    rules_hash: str = Field(sa_type=String(64), nullable=False)
    rules_path: str | None = Field(default=None, sa_type=Text, nullable=True)
    created_at: datetime = Field(sa_type=_TIMESTAMP, nullable=False)


class RunRow(_Table, table=True):
    """One run's header: what `runs list` filters on and shows.

    Created with the run's `run_created` event; its status, counters and position are brought
    up to date by the events that change the status (paused, resumed, stopped), its lease
    columns by `claim_run`, renewals and releases. While a run runs, its journal is ahead of
    the header's counters: `load_run` folds them from the events.
    """

    __tablename__ = "run"
    __table_args__ = (
        Index(None, "agent_id"),
        Index(None, "status"),
        Index(None, "created_at"),
        Index(None, "parent_run_id"),
    )

    id: str = Field(sa_type=String(64), primary_key=True)
    agent_id: int = Field(sa_type=Integer, foreign_key="agent.id", nullable=False)
    # Copied from the agent row (immutable) so a resume can check the rules did not change
    # without a join.
    rules_hash: str = Field(sa_type=String(64), nullable=False)
    model: str = Field(sa_type=String, nullable=False)
    input: str = Field(sa_type=Text, nullable=False)
    options: dict[str, Any] = Field(sa_type=_JSON, nullable=False)
    status: str = Field(sa_type=String(32), nullable=False)
    stop_reason: str | None = Field(default=None, sa_type=String, nullable=True)
    position: Any = Field(default=None, sa_type=_JSON, nullable=True)
    error: str | None = Field(default=None, sa_type=Text, nullable=True)
    input_tokens: int = Field(default=0, sa_type=Integer, nullable=False)
    output_tokens: int = Field(default=0, sa_type=Integer, nullable=False)
    steps_count: int = Field(default=0, sa_type=Integer, nullable=False)
    created_at: datetime = Field(sa_type=_TIMESTAMP, nullable=False)
    updated_at: datetime = Field(sa_type=_TIMESTAMP, nullable=False)
    finished_at: datetime | None = Field(default=None, sa_type=_TIMESTAMP, nullable=True)
    # The run lease: the one process that may write the run ("host:pid:random"), when it
    # last renewed its claim, and when the claim lapses if it is not renewed (the owner died).
    # All three are NULL while nobody runs the run.
    owner: str | None = Field(default=None, sa_type=String(128), nullable=True)
    lease_renewed_at: datetime | None = Field(default=None, sa_type=_TIMESTAMP, nullable=True)
    lease_expires_at: datetime | None = Field(default=None, sa_type=_TIMESTAMP, nullable=True)
    # A callee's run (an agent messaged by another's agent tool): the caller's run, the call
    # that started it, and how deep it nests (0: a run nobody called).
    parent_run_id: str | None = Field(default=None, sa_type=String(64), nullable=True)
    parent_call_id: str | None = Field(default=None, sa_type=String, nullable=True)
    depth: int = Field(
        default=0, sa_type=Integer, nullable=False, sa_column_kwargs={"server_default": "0"}
    )


class RunEventRow(_Table, table=True):
    """One event of a run's journal (`engine.store.events`), numbered 0, 1, 2, ... per run.

    Append-only. `body` is the event's JSON text (its model's fields); `kind` is
    the body's kind, copied so a reader can filter without parsing. On SQLite the rows go
    in rowid order (appended at the table's end) and the primary key is a slim index: many
    runs' appends in one transaction touch few pages (keyed by run, without a rowid, each
    run's row dirtied a page of its own: half the group-commit rate, measured).
    """

    __tablename__ = "run_event"
    run_id: str = Field(
        sa_type=String(64), foreign_key="run.id", ondelete="CASCADE", primary_key=True
    )
    seq: int = Field(sa_type=Integer, primary_key=True, sa_column_kwargs={"autoincrement": False})
    kind: str = Field(sa_type=String(32), nullable=False)
    at: datetime = Field(sa_type=_TIMESTAMP, nullable=False)
    body: str = Field(sa_type=Text, nullable=False)
