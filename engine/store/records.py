"""Records: the frozen values the run store takes and returns.

They are plain pydantic models, detached from any database session, so callers never trigger
lazy loads or see half-refreshed rows. JSON payloads (positions, replies, messages) are
whatever JSON-serialisable value the run loop hands over; the store never interprets them,
which keeps it free of imports from the rule compiler and the providers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from engine.store.status import CallStatus, RunStatus

__all__ = [
    "AgentRecord",
    "CallStatus",
    "DecisionRecord",
    "MessageRecord",
    "RunRecord",
    "RunSnapshot",
    "RunStatus",
    "StepRecord",
    "ToolCallRecord",
    "utcnow",
]


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime (the only clock the store uses)."""
    return datetime.now(UTC)


class _Record(BaseModel):
    # Frozen and strict about unknown keys: a typo in a field name must fail loudly.
    model_config = ConfigDict(frozen=True, extra="forbid")


class AgentRecord(_Record):
    """An agent definition: the rule file exactly as it was when a run used it."""

    id: int
    name: str
    rules_text: str
    rules_hash: str
    rules_path: str | None
    created_at: datetime


class RunRecord(_Record):
    """One run's header row: status, position and counters after the last committed write."""

    id: str
    agent_id: int
    agent_name: str
    rules_hash: str
    model: str
    input: str
    options: dict[str, JsonValue]
    status: RunStatus
    stop_reason: str | None
    position: JsonValue
    error: str | None
    input_tokens: int
    output_tokens: int
    steps_count: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    # The run lease (see `SqlStore.claim_run`): who may write the run now, None when nobody.
    owner: str | None = None
    lease_renewed_at: datetime | None = None
    lease_expires_at: datetime | None = None
    # A callee's run: its caller's run and call, and its nesting depth (0: nobody called it).
    parent_run_id: str | None = None
    parent_call_id: str | None = None
    depth: int = 0


class StepRecord(_Record):
    """One step of the loop: the gate that was applied, the reply, and where it led.

    The body of a `step_committed` event (`engine.store.events`); `load_run` returns it with
    `finished_at`, the commit's time. `seq` numbers steps 0, 1, 2, ... within a run.
    """

    seq: int = Field(ge=0)
    position_before: JsonValue
    position_after: JsonValue
    allowed: tuple[str, ...]
    force: bool = False
    forced_tool: str | None = None
    tool_choice: JsonValue = None
    reply: JsonValue = None
    decision: Literal["continue", "stop"] | None = None
    reason: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)


class ToolCallRecord(_Record):
    """One tool call the model asked for, and what became of it."""

    call_id: str
    step_seq: int
    batch_index: int
    tool: str
    arguments_raw: str
    arguments: JsonValue
    status: CallStatus
    result: JsonValue = None
    is_error: bool = False
    violation: str | None
    side_effects: bool
    started_at: datetime
    finished_at: datetime | None = None
    duration_ms: int | None = None

    @property
    def is_pending(self) -> bool:
        """True until a result is recorded (running, awaiting approval, or cut off by a crash)."""
        return self.finished_at is None


class MessageRecord(_Record):
    """One conversation message as the loop stored it (`content` is the loop's dict)."""

    seq: int
    role: str
    content: dict[str, JsonValue]
    step_seq: int | None
    created_at: datetime


class DecisionRecord(_Record):
    """A human's decision on a call, as the audit trail shows it: who, when, what, and the
    arguments before and after (`arguments_after` None: run as they were)."""

    call_id: str
    decision: Literal["approve", "deny", "retry", "mark_failed"]
    reviewer: str | None
    decided_at: datetime
    reason: str | None = None
    arguments_before: JsonValue = None
    arguments_after: JsonValue = None


class RunSnapshot(_Record):
    """Everything needed to inspect or resume a run, read in one consistent transaction."""

    run: RunRecord
    agent: AgentRecord
    steps: tuple[StepRecord, ...]
    calls: tuple[ToolCallRecord, ...]
    messages: tuple[MessageRecord, ...]
    # The number the run's next journal event takes: the lease holder numbers its appends
    # from it (`Append.seq`).
    next_event: int = 0
    decisions: tuple[DecisionRecord, ...] = ()

    @property
    def pending_calls(self) -> tuple[ToolCallRecord, ...]:
        """Calls with no recorded result, in the order the model made them."""
        return tuple(call for call in self.calls if call.is_pending)

    @property
    def conversation(self) -> list[dict[str, Any]]:
        """The message dicts in order, as the loop handed them to the store."""
        return [dict(message.content) for message in self.messages]
