"""What crosses between a run's workflow, its activities and its clients: small dataclasses
of JSON values (Temporal's default converter carries them), never a run's conversation.

A journal's appends travel as `WireAppend`s in the input of the activity that writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_jsonable_python

from engine.store.protocol import Append

__all__ = [
    "WORKFLOW",
    "CreateRun",
    "DecideCall",
    "Decided",
    "Decision",
    "ModelCall",
    "RunLocation",
    "RunSpec",
    "ToolCallInput",
    "ToolOutcome",
    "WireAppend",
    "location_of",
    "owner_of",
]

WORKFLOW = "toolfsm.run"  # the workflow type every worker serves


def owner_of(run_id: str) -> str:
    """The lease owner a Temporal run is written under, for its whole life: the workflow's
    (not a process's: whichever worker runs an activity of it writes as the workflow)."""
    return f"temporal:{run_id}"


@dataclass(frozen=True)
class RunLocation:
    """Where a run lives on Temporal (stored in the run's options as `temporal`)."""

    address: str
    task_queue: str
    workflow_id: str
    namespace: str = "default"


def location_of(options: dict[str, Any]) -> RunLocation | None:
    """Where a stored run lives on Temporal (its `temporal` option), or None: a local run."""
    stored = options.get("temporal")
    if not isinstance(stored, dict):
        return None
    return RunLocation(
        str(stored["address"]),
        str(stored["task_queue"]),
        str(stored["workflow_id"]),
        str(stored.get("namespace", "default")),
    )


@dataclass
class RunSpec:
    """The workflow's input: which agent (pinned by the sha256 of its rule text), with what
    input and model. `options` are the run's options as a local run stores them."""

    run_id: str
    agent: str
    rules_sha256: str
    input: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)
    max_steps: int | None = None


@dataclass
class WireAppend:
    """A journal's `Append`, as JSON values."""

    run_id: str
    owner: str
    events: list[dict[str, Any]]
    lease_seconds: float | None = None
    release: bool = False
    seq: int | None = None

    @classmethod
    def of(cls, append: Append) -> WireAppend:
        events = [to_jsonable_python(event, fallback=str) for event in append.events]
        return cls(
            append.run_id, append.owner, events, append.lease_seconds, append.release, append.seq
        )

    def append(self) -> Append:
        return Append(
            self.run_id, self.owner, self.events, self.lease_seconds, self.release, self.seq
        )


@dataclass
class CreateRun:
    """`toolfsm.create_run`: store the agent and the run's `run_created` event."""

    spec: RunSpec
    owner: str
    position: Any
    options: dict[str, Any]


@dataclass
class ModelCall:
    """`toolfsm.ask_model`: write `writes`, then ask the model for step `seq` of the run at
    `position`, with the run's messages as the store holds them (`messages` of them)."""

    run_id: str
    agent: str
    rules_sha256: str
    seq: int
    position: Any
    messages: int
    writes: list[WireAppend] = field(default_factory=list)


@dataclass
class ToolCallInput:
    """`toolfsm.run_tool` (`toolfsm.call_agents`, an agent tool's): write `writes`, then
    run `tool` with `arguments`, as call `key` of the run."""

    run_id: str
    agent: str
    rules_sha256: str
    tool: str
    arguments: dict[str, Any]
    key: str
    writes: list[WireAppend] = field(default_factory=list)


@dataclass
class ToolOutcome:
    """A call's result; for an agent tool whose callees paused, the runs they wait in."""

    output: Any
    is_error: bool
    duration_ms: int
    waiting: list[str] | None = None


@dataclass
class Decision:
    """The workflow update `decide`: approve or deny the held call, or retry or fail the
    interrupted one (`call_id`: the call it is for; None: the one the run waits on)."""

    decision: str  # approve | deny | retry | fail
    call_id: str | None = None
    reason: str | None = None
    by: str | None = None
    arguments: dict[str, Any] | None = None


@dataclass
class DecideCall:
    """`toolfsm.decide`: record `decision` on `call_id` and mark the run running again."""

    run_id: str
    agent: str
    rules_sha256: str
    owner: str
    call_id: str
    decision: Decision


@dataclass
class Decided:
    """What `toolfsm.decide` recorded: the call's status now, the records of the paused
    step's calls as the store has them, and the number of the run's next event."""

    call_id: str
    tool: str
    status: str
    decision: str
    step_calls: list[dict[str, Any]]
    next_event: int
