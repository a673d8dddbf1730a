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
    """Text from the model (providers answer whole replies, so one delta per reply)."""

    seq: int
    text: str


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
    | ToolCallStarted
    | ToolResultEvent
    | Violation
    | ApprovalRequested
    | Notice
    | StepCommitted
    | Stopped
)
