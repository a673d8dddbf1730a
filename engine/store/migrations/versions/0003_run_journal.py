"""The run journal: step, tool_call and message become events in run_event.

Every run of a database written by 0002 is converted into the events its journal would hold:
`run_created` (the header's values, the messages before the first step), per call a
`calls_started` event when it started and another when its result was recorded (at the
times stored), per step the reply's `calls_started` and its `step_committed` (at the step's
finish time, with the messages that followed the reply), in time order. The header row keeps
its status, counters and lease. The bodies are spelled out here (version 1 of each event), so
this revision stays what it is when the event models move on.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON(none_as_null=True)
_TIMESTAMP = sa.DateTime(timezone=True)
_META = sa.MetaData()
_RUN = sa.Table(
    "run",
    _META,
    sa.Column("id", sa.String(64)),
    sa.Column("agent_id", sa.Integer()),
    sa.Column("rules_hash", sa.String(64)),
    sa.Column("model", sa.String()),
    sa.Column("input", sa.Text()),
    sa.Column("options", _JSON),
    sa.Column("position", _JSON),
    sa.Column("created_at", _TIMESTAMP),
)
_STEP = sa.Table(
    "step",
    _META,
    sa.Column("run_id", sa.String(64)),
    sa.Column("seq", sa.Integer()),
    sa.Column("position_before", _JSON),
    sa.Column("position_after", _JSON),
    sa.Column("allowed", _JSON),
    sa.Column("force", sa.Boolean()),
    sa.Column("forced_tool", sa.String()),
    sa.Column("tool_choice", _JSON),
    sa.Column("reply", _JSON),
    sa.Column("decision", sa.String(16)),
    sa.Column("reason", sa.Text()),
    sa.Column("started_at", _TIMESTAMP),
    sa.Column("finished_at", _TIMESTAMP),
    sa.Column("input_tokens", sa.Integer()),
    sa.Column("output_tokens", sa.Integer()),
)
_CALL = sa.Table(
    "tool_call",
    _META,
    sa.Column("run_id", sa.String(64)),
    sa.Column("call_id", sa.String()),
    sa.Column("step_seq", sa.Integer()),
    sa.Column("batch_index", sa.Integer()),
    sa.Column("tool", sa.String()),
    sa.Column("arguments_raw", sa.Text()),
    sa.Column("arguments", _JSON),
    sa.Column("status", sa.String(32)),
    sa.Column("result", _JSON),
    sa.Column("is_error", sa.Boolean()),
    sa.Column("violation", sa.Text()),
    sa.Column("side_effects", sa.Boolean()),
    sa.Column("started_at", _TIMESTAMP),
    sa.Column("finished_at", _TIMESTAMP),
    sa.Column("duration_ms", sa.Integer()),
)
_MESSAGE = sa.Table(
    "message",
    _META,
    sa.Column("run_id", sa.String(64)),
    sa.Column("seq", sa.Integer()),
    sa.Column("role", sa.String()),
    sa.Column("content", _JSON),
    sa.Column("step_seq", sa.Integer()),
    sa.Column("created_at", _TIMESTAMP),
)
_EVENT = sa.Table(
    "run_event",
    _META,
    sa.Column("run_id", sa.String(64)),
    sa.Column("seq", sa.Integer()),
    sa.Column("kind", sa.String(32)),
    sa.Column("at", _TIMESTAMP),
    sa.Column("body", sa.Text()),
)


def upgrade() -> None:
    """Create run_event, fill it from the old tables run by run, drop them."""
    op.create_table(
        "run_event",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", _TIMESTAMP, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["run.id"], name="fk_run_event_run_id_run", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_run_event"),
    )
    connection = op.get_bind()
    for run in connection.execute(sa.select(_RUN)).mappings().all():
        rows = [
            {"run_id": run["id"], "seq": seq, "kind": body["kind"], "at": at, "body": _dump(body)}
            for seq, (at, body) in enumerate(_events(connection, run))
        ]
        if rows:
            connection.execute(_EVENT.insert(), rows)
    op.drop_table("message")
    op.drop_table("tool_call")
    op.drop_table("step")


def _events(connection: sa.Connection, run: Any) -> Iterator[tuple[datetime, dict[str, Any]]]:
    """The run's events as (time, body), in journal order."""
    run_id = run["id"]

    def rows(table: sa.Table, *order: Any) -> list[Any]:
        query = sa.select(table).where(table.c.run_id == run_id).order_by(*order)
        return list(connection.execute(query).mappings().all())

    steps = rows(_STEP, _STEP.c.seq)
    calls = rows(_CALL, _CALL.c.step_seq, _CALL.c.batch_index, _CALL.c.started_at)
    messages = rows(_MESSAGE, _MESSAGE.c.seq)
    first_tied = next((i for i, m in enumerate(messages) if m["step_seq"] is not None), None)
    leading = messages if first_tied is None else messages[:first_tied]
    created = {
        "kind": "run_created",
        "version": 1,
        **{name: run[name] for name in ("agent_id", "rules_hash", "model", "input", "options")},
        "position": steps[0]["position_before"] if steps else run["position"],
        "messages": [m["content"] for m in leading],
    }
    yield _utc(run["created_at"]), created
    later = messages[len(leading) :]
    # Each step's (and the pending step's) events, in the order they were written.
    numbers = sorted({s["seq"] for s in steps} | {c["step_seq"] for c in calls} | _tied(later))
    by_step = {s["seq"]: s for s in steps}
    for number in numbers:
        own = [m for m in later if _owner(m, later) == number]
        yield from _step_events(number, by_step.get(number), calls, own)


def _tied(messages: list[Any]) -> set[int]:
    return {m["step_seq"] for m in messages if m["step_seq"] is not None}


def _owner(message: Any, messages: list[Any]) -> int:
    """The step a message belongs to; an untied one (rows before replies carried their step)
    goes with the step of the tied message before it."""
    if message["step_seq"] is not None:
        return int(message["step_seq"])
    before = [
        m["step_seq"] for m in messages[: messages.index(message)] if m["step_seq"] is not None
    ]
    return int(before[-1]) if before else 0


def _step_events(
    number: int, step: Any, calls: list[Any], messages: list[Any]
) -> Iterator[tuple[datetime, dict[str, Any]]]:
    reply = next((m for m in messages if m["role"] == "assistant"), None)
    rest = [m for m in messages if m is not reply]
    events: list[tuple[datetime, int, dict[str, Any]]] = []
    if reply is not None:
        body = {"kind": "calls_started", "version": 1, "step": number, "reply": reply["content"]}
        events.append((_utc(reply["created_at"]), 0, {**body, "calls": []}))
    for call in (c for c in calls if c["step_seq"] == number):
        opened = {
            "id": call["call_id"],
            "status": call["status"],
            "step": number,
            "index": call["batch_index"],
            "tool": call["tool"],
            "arguments_raw": call["arguments_raw"],
            "arguments": call["arguments"],
            "side_effects": bool(call["side_effects"]),
            "violation": call["violation"],
        }
        events.append((_utc(call["started_at"]), 1, _calls(number, opened)))
        if call["finished_at"] is not None:
            done = {
                "id": call["call_id"],
                "status": call["status"],
                "done": True,
                "result": call["result"],
                "is_error": bool(call["is_error"]),
                "duration_ms": call["duration_ms"],
            }
            events.append((_utc(call["finished_at"]), 2, _calls(number, done)))
    if step is not None:
        record = {
            name: step[name]
            for name in (
                "position_before",
                "position_after",
                "allowed",
                "force",
                "forced_tool",
                "tool_choice",
                "reply",
                "decision",
                "reason",
                "input_tokens",
                "output_tokens",
            )
        }
        record.update(seq=number, started_at=_utc(step["started_at"]).isoformat())
        body = {
            "kind": "step_committed",
            "version": 1,
            "step": record,
            "reply_in_history": False,  # the reply's message is its own event above
            "calls": [],
            "messages": [m["content"] for m in rest],
        }
        events.append((_utc(step["finished_at"]), 3, body))
    for at, _, body in sorted(events, key=lambda e: (e[0], e[1])):
        yield at, body


def _calls(number: int, entry: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "calls_started", "version": 1, "step": number, "reply": None, "calls": [entry]}


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _dump(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def downgrade() -> None:
    """Recreate the 0002 tables, empty, and drop run_event: the journal is not converted
    back (a downgrade keeps agents and run headers; a run's steps, calls and messages are
    lost). Back up the database first."""
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
    op.drop_table("run_event")
