"""Reading a run's journal back: its events folded into the records of a `RunSnapshot`.

The fold is the one place that knows what each event means for steps, calls and messages;
the SQL store reads the rows and hands them here, and the run header supplies what events do
not carry (status, lease). A fold checks nothing a writer could not have written: the lease
fences every append, so a journal is one writer's account, in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.store.errors import CallNotFound, CallStateConflict
from engine.store.events import (
    CallEntry,
    CallsStarted,
    Decided,
    Paused,
    RunCreated,
    StepCommitted,
    Stopped,
    StoredEvent,
)
from engine.store.records import (
    AgentRecord,
    DecisionRecord,
    MessageRecord,
    RunRecord,
    RunSnapshot,
    StepRecord,
    ToolCallRecord,
)
from engine.store.status import CallStatus

__all__ = ["DECISION_STATUS", "Fold", "check_decision", "fold"]

# What a decision makes of a call, and the statuses it may be decided from.
DECISION_STATUS = {
    "approve": CallStatus.APPROVED,
    "deny": CallStatus.DENIED,
    "retry": CallStatus.STARTED,
    "mark_failed": CallStatus.FAILED,
}
_DECIDABLE = {
    "approve": frozenset({CallStatus.AWAITING_APPROVAL}),
    "deny": frozenset({CallStatus.AWAITING_APPROVAL}),
    "retry": frozenset({CallStatus.STARTED, CallStatus.APPROVED}),
    "mark_failed": frozenset(
        {CallStatus.STARTED, CallStatus.APPROVED, CallStatus.AWAITING_APPROVAL}
    ),
}
# A call's record takes the fields its entries name alike; those of its result only from the
# entry that records it (`done`).
_RESULT = {"result", "is_error", "duration_ms"}
_NAMED_ALIKE = set(CallEntry.model_fields) & set(ToolCallRecord.model_fields) - _RESULT
# A decision's record: the fields its event names alike (decision, reviewer, reason, ...).
_DECISION_ALIKE = set(Decided.model_fields) & set(DecisionRecord.model_fields)


@dataclass
class Fold:
    """The records built so far from a run's events, in journal order."""

    run_id: str
    steps: list[StepRecord] = field(default_factory=list)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: list[MessageRecord] = field(default_factory=list)
    decisions: list[DecisionRecord] = field(default_factory=list)
    replied: set[int] = field(default_factory=set)  # steps whose reply is in `messages`
    position: Any = None
    input_tokens: int = 0
    output_tokens: int = 0
    updated_at: datetime | None = None
    next_event: int = 0  # the number the run's next event takes

    def add(self, stored: StoredEvent) -> None:
        event, at = stored.event, stored.at
        self.next_event = stored.seq + 1
        # As the header's updated_at: moved by the run's changes and steps, not by what a
        # step records before its commit, nor by a decision.
        if not isinstance(event, CallsStarted | Decided):
            self.updated_at = at
        if isinstance(event, RunCreated):
            self.position = event.position
            self._messages(event.messages, None, at)
        elif isinstance(event, CallsStarted):
            if event.reply is not None:
                self._reply(event.step, event.reply, at)
            self._calls(event.calls, at)
        elif isinstance(event, StepCommitted):
            self._step(event, at)
        elif isinstance(event, Paused | Stopped):
            self._calls(event.calls, at)
        elif isinstance(event, Decided):
            self._decide(event, at)

    def _step(self, event: StepCommitted, at: datetime) -> None:
        step = event.step.model_copy(update={"finished_at": at})
        if event.reply_in_history and isinstance(step.reply, dict):
            self._reply(step.seq, step.reply, at)
        self._calls(event.calls, at)
        self._messages(event.messages, step.seq, at)
        self.steps.append(step)
        self.position = step.position_after
        self.input_tokens += step.input_tokens
        self.output_tokens += step.output_tokens

    def _reply(self, seq: int, reply: dict[str, Any], at: datetime) -> None:
        if seq not in self.replied:
            self.replied.add(seq)
            self._messages([reply], seq, at)

    def _messages(self, messages: Iterable[dict[str, Any]], step: int | None, at: datetime) -> None:
        for content in messages:
            seq = len(self.messages)
            role = str(content.get("role", ""))
            self.messages.append(
                MessageRecord(seq=seq, role=role, content=content, step_seq=step, created_at=at)
            )

    def _calls(self, entries: Sequence[CallEntry], at: datetime) -> None:
        for entry in entries:
            call = self.calls.get(entry.id)
            if call is None:  # its first entry: the fields named alike, and these
                call = self.calls[entry.id] = entry.model_dump(include=_NAMED_ALIKE) | {
                    "call_id": entry.id,
                    "step_seq": entry.step or 0,
                    "batch_index": entry.index or 0,
                    "tool": entry.tool or "",
                    "arguments_raw": entry.arguments_raw or "",
                    "started_at": at,
                }
            elif entry.arguments is not None:
                call["arguments"] = entry.arguments
            call["status"] = entry.status
            if entry.done:
                call.update(entry.model_dump(include=_RESULT), finished_at=at)

    def _decide(self, event: Decided, at: datetime) -> None:
        done = event.decision == "deny" or event.decision == "mark_failed"
        entry = CallEntry(
            id=event.call,
            status=DECISION_STATUS[event.decision],
            done=done,
            result=event.result,
            is_error=done,
            arguments=event.arguments,  # an approval with edits: what the call runs with
        )
        self._calls([entry], at)
        named_alike = event.model_dump(include=_DECISION_ALIKE)
        record = DecisionRecord(
            call_id=event.call, decided_at=at, arguments_after=event.arguments, **named_alike
        )
        self.decisions.append(record)

    def call(self, call_id: str) -> ToolCallRecord | None:
        values = self.calls.get(call_id)
        return None if values is None else ToolCallRecord(**values)

    def snapshot(self, run: RunRecord, agent: AgentRecord) -> RunSnapshot:
        """The snapshot: the header's status and lease, the journal's counters."""
        updated = max(run.updated_at, self.updated_at or run.updated_at)
        folded = run.model_copy(
            update={
                "position": self.position,
                "steps_count": len(self.steps),
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "updated_at": updated,
            }
        )
        calls = sorted(
            (ToolCallRecord(**values) for values in self.calls.values()),
            key=lambda c: (c.step_seq, c.batch_index, c.started_at),
        )
        return RunSnapshot(
            run=folded,
            agent=agent,
            steps=tuple(self.steps),
            calls=tuple(calls),
            messages=tuple(self.messages),
            next_event=self.next_event,
            decisions=tuple(self.decisions),
        )


def fold(run_id: str, events: Iterable[StoredEvent]) -> Fold:
    """Fold a run's events, in order."""
    folded = Fold(run_id)
    for stored in events:
        folded.add(stored)
    return folded


def check_decision(folded: Fold, event: Decided) -> None:
    """`CallNotFound` or `CallStateConflict` unless the call can be decided so now."""
    call = folded.call(event.call)
    if call is None:
        raise CallNotFound(folded.run_id, event.call)
    allowed = _DECIDABLE[event.decision]
    if call.finished_at is not None or call.status not in allowed:
        target = DECISION_STATUS[event.decision]
        raise CallStateConflict(
            folded.run_id,
            event.call,
            call.status.value,
            target.value,
            sorted(s.value for s in allowed) if call.finished_at is None else [],
        )
