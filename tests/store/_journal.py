"""Writing runs for the store tests: the journal's events, appended as the run loop does."""

from __future__ import annotations

from typing import Any

from engine.store import Append, SqlStore
from engine.store.errors import StoreError
from engine.store.events import (
    CallEntry,
    CallsStarted,
    Paused,
    RunCreated,
    StepCommitted,
    Stopped,
    Totals,
)
from engine.store.records import StepRecord

OWNER = "test-host:1:owner"
RULES = "version: 1\nagent: journal\ntools: [lookup, charge]\nrules: []\n"


def append(store: SqlStore, run_id: str, *events: Any, owner: str = OWNER, **kw: Any) -> None:
    """Append `events` (models or drafts) under `owner`'s lease, raising the error if any."""
    (error,) = store.append([Append(run_id, owner, list(events), **kw)])
    if error is not None:
        raise error


def errors(store: SqlStore, *appends: Append) -> list[StoreError | None]:
    return store.append(list(appends))


def new_run(
    store: SqlStore,
    run_id: str = "run-1",
    *,
    agent: str = "journal",
    owner: str = OWNER,
    first: str = "go",
    position: Any = None,
    options: dict[str, Any] | None = None,
) -> str:
    record = store.save_agent(agent, RULES)
    created = RunCreated(
        agent_id=record.id,
        rules_hash=record.rules_hash,
        model="scripted:x",
        input=first,
        options=options or {},
        position=position if position is not None else {"state": "s0"},
        messages=[{"role": "user", "text": first}],
    )
    append(store, run_id, created, owner=owner, lease_seconds=30)
    return run_id


def step(seq: int, **fields: Any) -> StepRecord:
    values: dict[str, Any] = {
        "seq": seq,
        "position_before": {"state": f"s{seq}"},
        "position_after": {"state": f"s{seq + 1}"},
        "allowed": ("lookup", "charge"),
        "reply": {"role": "assistant", "text": f"reply {seq}"},
        "decision": "continue",
        "reason": "tool_call",
    }
    values.update(fields)
    return StepRecord(**values)


def opened(call_id: str, seq: int, index: int = 0, **fields: Any) -> CallEntry:
    values: dict[str, Any] = {
        "id": call_id,
        "status": "started",
        "step": seq,
        "index": index,
        "tool": "charge",
        "arguments_raw": '{"amount": 1}',
        "arguments": {"amount": 1},
        "side_effects": True,
    }
    values.update(fields)
    return CallEntry(**values)


def done(call_id: str, result: Any = "ok", **fields: Any) -> CallEntry:
    values: dict[str, Any] = {"id": call_id, "status": "finished", "done": True, "result": result}
    values.update(fields)
    return CallEntry(**values)


def started(seq: int, *calls: CallEntry, reply: dict[str, Any] | None = None) -> CallsStarted:
    return CallsStarted(step=seq, reply=reply, calls=list(calls))


def committed(
    seq: int, *calls: CallEntry, messages: list[dict[str, Any]] | None = None, **fields: Any
) -> StepCommitted:
    return StepCommitted(step=step(seq, **fields), calls=list(calls), messages=messages or [])


def totals(steps: int, position: Any = None, tokens: tuple[int, int] = (0, 0)) -> Totals:
    return Totals(
        steps=steps,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        position=position if position is not None else {"state": f"s{steps}"},
    )


def stopped(steps: int, status: str = "finished", **fields: Any) -> Stopped:
    fields.setdefault("stop_reason", "end_turn" if status == "finished" else None)
    return Stopped(status=status, totals=totals(steps), **fields)


def paused(steps: int, status: str = "awaiting_approval") -> Paused:
    return Paused(status=status, stop_reason=status, totals=totals(steps))
