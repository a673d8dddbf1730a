"""The events a run streams while it goes: what the CLI renders live, and tests observe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.machine import StopReason
from engine.providers.base import Usage

__all__ = [
    "ApprovalRequested",
    "Event",
    "Notice",
    "RunResult",
    "RunStarted",
    "StepCommitted",
    "StepStarted",
    "Stopped",
    "TextDelta",
    "ToolCallDelta",
    "ToolCallStarted",
    "ToolResultEvent",
    "Violation",
]


@dataclass(frozen=True, slots=True)
class RunStarted:
    run_id: str
    agent: str
    model: str
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class StepStarted:
    seq: int
    allowed: tuple[str, ...]
    force: bool
    forced_tool: str | None


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Text from the model as it arrives: from a streaming provider one piece at a time (a
    step's pieces, joined, are its reply's text), else the whole text at once."""

    seq: int
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call as the model writes it (streaming providers): `arguments` is the
    next fragment of the JSON arguments of the reply's call `index`; `call_id` and `tool` as
    far as they are known yet. The call is judged and run once the reply is complete
    (`ToolCallStarted` or `Violation` follows)."""

    seq: int
    index: int
    call_id: str | None
    tool: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    seq: int
    call_id: str
    tool: str
    arguments: dict[str, Any]
    replayed: bool = False  # the result comes from the store (a resumed step), not a new run


@dataclass(frozen=True, slots=True)
class ToolResultEvent:
    seq: int
    call_id: str
    tool: str
    output: Any
    is_error: bool
    duration_ms: int | None


@dataclass(frozen=True, slots=True)
class Violation:
    """A call that was not executed: outside the allowed set, unknown, or with bad arguments."""

    seq: int
    call_id: str
    tool: str
    message: str


@dataclass(frozen=True, slots=True)
class ApprovalRequested:
    run_id: str
    seq: int
    call_id: str
    tool: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Notice:
    """A message the loop sends the model to keep it going (e.g. required-before-exit)."""

    seq: int
    text: str


@dataclass(frozen=True, slots=True)
class StepCommitted:
    seq: int
    decision: str
    reason: str
    position: dict[str, Any]
    usage: Usage | None = None  # the step's reply's tokens


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run (or a stretch of it, until it paused) ended."""

    run_id: str
    stop_reason: StopReason
    steps: int
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    text: str | None = None  # the model's last text
    position: dict[str, Any] | None = None
    pending_call: str | None = None  # the call awaiting approval or a decision
    # The paused step's tokens (the model was paid for its reply): included in `usage`, and
    # stored with the step when it finishes, so the store's totals do not have them yet.
    pending_usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Stopped:
    result: RunResult


Event = (
    RunStarted
    | StepStarted
    | TextDelta
    | ToolCallDelta
    | ToolCallStarted
    | ToolResultEvent
    | Violation
    | ApprovalRequested
    | Notice
    | StepCommitted
    | Stopped
)
