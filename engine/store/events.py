"""The run journal's events: one row per durability point, a typed and versioned JSON body.

A run's durable record is the append-only list of its events (table `run_event`, numbered
0, 1, 2, ... per run), plus one header row (table `run`) that holds what `runs list` filters
on and shows. The events, in the order a run writes them:

- `run_created`: the run's settings, start position and first messages (the header row is
  inserted with it);
- `calls_started`: mid-step, before a tool with side effects runs: the step's reply (if not
  recorded yet) and the calls recorded so far, the side-effect one `started`; also when a
  call is held for approval;
- `step_committed`: a step is done: the gate, the reply, where it led, the calls' results
  and the messages that follow the reply;
- `paused`: the run waits for a human (`awaiting_approval`, `awaiting_decision`), or on a
  callee's run that does (`awaiting_agents`);
- `decided`: a human decided on a held or interrupted call (approve, deny, retry,
  mark_failed), with who, when the store knows;
- `resumed`: a paused, failed or interrupted run goes on (the header says `running` again);
- `stopped`: the run ended (finished, failed or cancelled).

Every event has a `kind` and a `version`: a reader folds every version it knows
(`engine.store.fold`); a change to a body's meaning is a new version, never an edit. The
models are the schema: schemas/toolfsm-events.schema.json is generated from them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

from engine.store.records import StepRecord
from engine.store.status import CallStatus, RunStatus

__all__ = [
    "EVENT_ADAPTER",
    "CallEntry",
    "CallsStarted",
    "Decided",
    "Event",
    "Paused",
    "Resumed",
    "RunCreated",
    "StepCommitted",
    "Stopped",
    "Totals",
    "event_schema",
    "event_schema_text",
]

Message = dict[str, JsonValue]


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CallEntry(_Body):
    """A tool call recorded for the first time (`tool` given) or moved on (`status` and,
    when `done`, its result: recorded once per call)."""

    id: str = Field(description="the call's key in its run")
    status: CallStatus
    step: int | None = Field(default=None, description="first record: the step whose reply made it")
    index: int | None = Field(default=None, description="first record: its place in the reply")
    tool: str | None = None
    arguments_raw: str | None = None
    arguments: JsonValue = None
    side_effects: bool = False
    violation: str | None = None
    done: bool = Field(default=False, description="this entry records the call's result")
    result: JsonValue = None
    is_error: bool = False
    duration_ms: int | None = None


class Totals(_Body):
    """Where a run stood when it paused or stopped (copied to its header row)."""

    steps: int = Field(ge=0)
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    position: JsonValue = None


class RunCreated(_Body):
    """A run was created: its header's values, its start position and first messages."""

    kind: Literal["run_created"] = "run_created"
    version: Literal[1] = 1
    agent_id: int
    rules_hash: str
    model: str
    input: str
    options: dict[str, JsonValue]
    position: JsonValue = None
    messages: list[Message] = []
    parent_run_id: str | None = Field(default=None, description="a callee's: its caller's run")
    parent_call_id: str | None = Field(default=None, description="the call that started it")
    depth: int = Field(default=0, ge=0, description="how deep it nests (0: nobody called it)")


class CallsStarted(_Body):
    """Mid-step: the reply of step `step` (when not recorded before) and its calls so far."""

    kind: Literal["calls_started"] = "calls_started"
    version: Literal[1] = 1
    step: int = Field(ge=0)
    reply: Message | None = None
    calls: list[CallEntry] = []


class StepCommitted(_Body):
    """A step is done. `step.reply` is also the assistant message of the history unless it
    was recorded by an earlier event, or `reply_in_history` is false (a malformed reply)."""

    kind: Literal["step_committed"] = "step_committed"
    version: Literal[1] = 1
    step: StepRecord
    reply_in_history: bool = True
    calls: list[CallEntry] = []
    messages: list[Message] = Field(default=[], description="what follows the reply (tool results)")


class Paused(_Body):
    """The run waits for a human: approval of a held call, or a decision on an interrupted
    side-effect call; or, `awaiting_agents`, on a callee's run that waits for one."""

    kind: Literal["paused"] = "paused"
    version: Literal[1] = 1
    status: Literal[
        RunStatus.AWAITING_APPROVAL, RunStatus.AWAITING_DECISION, RunStatus.AWAITING_AGENTS
    ]
    stop_reason: str
    calls: list[CallEntry] = []
    totals: Totals


class Stopped(_Body):
    """The run ended: finished, failed (with `error`) or cancelled."""

    kind: Literal["stopped"] = "stopped"
    version: Literal[1] = 1
    status: Literal[RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED]
    stop_reason: str | None = None
    error: str | None = None
    calls: list[CallEntry] = []
    totals: Totals


class Decided(_Body):
    """A decision on call `call`: approve or deny a held call (a denial's `result` is what the
    model reads), retry or mark_failed a side-effect call a crash interrupted.

    Version 2 adds the audit record: `reviewer` (the person who decided; `by` stays the lease
    the decision was taken under), and for an approval with edits the arguments before and
    after (`arguments`: what the call runs with). When is the event's commit time."""

    kind: Literal["decided"] = "decided"
    version: Literal[1, 2] = 2
    call: str
    decision: Literal["approve", "deny", "retry", "mark_failed"]
    by: str | None = Field(default=None, description="the lease the decision was taken under")
    reason: str | None = None
    result: JsonValue = None
    reviewer: str | None = Field(default=None, description="version 2: who decided")
    arguments_before: JsonValue = Field(
        default=None, description="version 2: the call's arguments when it was decided"
    )
    arguments: JsonValue = Field(
        default=None, description="version 2: the edited arguments it runs with (None: as before)"
    )


class Resumed(_Body):
    """The run goes on from `previous` (its header's status then), under lease `by`."""

    kind: Literal["resumed"] = "resumed"
    version: Literal[1] = 1
    previous: RunStatus
    by: str | None = None


Event = Annotated[
    RunCreated | CallsStarted | StepCommitted | Paused | Stopped | Decided | Resumed,
    Field(discriminator="kind"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


class StoredEvent(_Body):
    """An event as read back: its number in the run and the time it was committed."""

    seq: int
    at: datetime
    event: Event


def event_schema() -> dict[str, Any]:
    """The JSON Schema of an event body (schemas/toolfsm-events.schema.json)."""
    schema = EVENT_ADAPTER.json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "toolfsm run journal event",
        "description": "The body of one row of a run's journal (table run_event).",
        **schema,
    }


def event_schema_text() -> str:
    """`event_schema()` as the checked-in file holds it."""
    return json.dumps(event_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":  # pragma: no cover - `python -m engine.store.events > schemas/...`
    print(event_schema_text(), end="")
