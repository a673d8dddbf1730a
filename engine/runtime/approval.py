"""Approving or denying a call that waits for a human; the run is then resumed as usual.

A decision is taken under the run's lease (`Store.claim_run`): of two reviewers deciding at
once, one claims the run and records its decision (a `decided` event); the other gets
`RunClaimed` (while the first holds the run) or finds the call decided. So exactly one
decision is ever executed.
"""

from __future__ import annotations

import getpass
import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic_core import to_jsonable_python

from engine.runtime.caps import cap_violation
from engine.runtime.resume import ResumeError
from engine.store.ids import new_owner_id
from engine.store.protocol import Append, Store
from engine.store.records import RunSnapshot, ToolCallRecord
from engine.store.status import CallStatus, RunStatus
from engine.tools import ArgumentError

if TYPE_CHECKING:
    from engine.runtime.agent import Agent

__all__ = [
    "DENIAL_PREFIX",
    "EditRefused",
    "approve",
    "awaiting_calls",
    "default_reviewer",
    "deny",
    "edited_arguments",
]


class EditRefused(ResumeError):
    """Arguments edited at approval break the tool's schema or the rules; nothing recorded."""


def default_reviewer() -> str:
    """Who decides when no one is named: the OS user (as `runs approve --by` defaults)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return "unknown"


DENIAL_PREFIX = "Denied by a human reviewer; the call was not executed. Reason: "


def awaiting_calls(store: Store, run_id: str) -> list[ToolCallRecord]:
    """The run's calls that wait for approval, in the order the model made them."""
    pending = store.load_run(run_id).pending_calls
    return [c for c in pending if c.status is CallStatus.AWAITING_APPROVAL]


def _pick(store: Store, run_id: str, call_id: str | None) -> ToolCallRecord:
    run = store.get_run(run_id)
    if run.status is not RunStatus.AWAITING_APPROVAL:
        raise ResumeError(f"run {run.id} is {run.status}, not awaiting approval")
    pending = store.load_run(run.id).pending_calls
    waiting = [c for c in pending if c.status is CallStatus.AWAITING_APPROVAL]
    if call_id is not None:
        chosen = [c for c in waiting if c.call_id == call_id]
        if not chosen:
            names = ", ".join(c.call_id for c in waiting) or "none"
            raise ResumeError(f"run {run.id}: no call {call_id!r} awaits approval ({names})")
        return chosen[0]
    if not waiting:
        decided = [c for c in pending if c.status is CallStatus.APPROVED]
        if decided:
            # Approved by a process that stopped before it ran the call: resume runs it.
            raise ResumeError(
                f"run {run.id}: call {decided[0].call_id} ({decided[0].tool}) is approved "
                f"already and has not run yet; continue with: toolfsm runs resume {run.id[:12]}"
            )
        raise ResumeError(f"run {run.id}: no call awaits approval")
    return waiting[0]


def _call_position(agent: Agent, snapshot: RunSnapshot, call: ToolCallRecord) -> Any:
    """Where the machine stands when `call` runs: the run's committed position, moved past the
    calls of the same step that ran before it (as the loop's replay moves it)."""
    machine = agent.machine
    stored = snapshot.run.position
    position = machine.load(stored) if isinstance(stored, dict) else machine.start()
    for earlier in snapshot.calls:
        if (
            earlier.step_seq == call.step_seq
            and earlier.batch_index < call.batch_index
            and earlier.status in (CallStatus.FINISHED, CallStatus.ERROR)
        ):
            position = machine.advance(position, earlier.tool, earlier.result)
    return position


def edited_arguments(
    agent: Agent, snapshot: RunSnapshot, call: ToolCallRecord, edited: Any
) -> dict[str, Any]:
    """The arguments a reviewer's edit makes, as JSON values, or `EditRefused` with the reason:
    they must be an object that fits the tool's schema, and leave every argument the rules
    prefill at this point as the rules set it (prefilled arguments win; an edit that changes
    one is refused rather than silently undone)."""
    where = f"run {snapshot.run.id}: call {call.call_id} ({call.tool})"
    if not isinstance(edited, dict):
        raise EditRefused(f"{where}: edited arguments must be a JSON object")
    tool = agent.tools.get(call.tool)
    if tool is None:
        raise EditRefused(f"{where}: the agent has no tool {call.tool!r} to check the edit with")
    gate = agent.machine.gate(_call_position(agent, snapshot, call))
    prefill = gate.prefill.get(call.tool) if gate.prefill else None
    for key, value in (prefill or {}).items():
        if key in edited and to_jsonable_python(edited[key]) != to_jsonable_python(value):
            raise EditRefused(
                f"{where}: argument {key!r} is prefilled by the rules to "
                f"{json.dumps(to_jsonable_python(value))}; the edit sets it to "
                f"{json.dumps(edited[key])}"
            )
    raw = json.dumps(edited, ensure_ascii=False)
    problem = cap_violation(raw)
    if problem is not None:
        raise EditRefused(f"{where}: {problem}")
    try:
        parsed, _ = tool.parse(raw, prefill=prefill)
    except ArgumentError as exc:
        raise EditRefused(f"{where}: the edit is refused: {exc}") from None
    result: dict[str, Any] = to_jsonable_python(parsed, fallback=str)
    return result


def _decide(
    store: Store,
    run_id: str,
    call_id: str | None,
    owner: str | None,
    decision: Literal["approve", "deny"],
    reason: str | None = None,
    *,
    by: str | None = None,
    arguments: Any = None,
    agent: Agent | None = None,
) -> ToolCallRecord:
    """Claim the run, pick the call, record the decision under the lease; the call after.

    With `owner`, the lease is kept for the resume that follows (`Runner(owner=owner)`);
    without, it is released with the decision."""
    from engine.store.events import Decided

    held_by = owner or new_owner_id()
    store.claim_run(run_id, held_by)
    try:
        call = _pick(store, run_id, call_id)
        after = None
        if arguments is not None:
            if agent is None:
                raise EditRefused("approving with edited arguments needs the run's agent")
            after = edited_arguments(agent, store.load_run(run_id), call, arguments)
        result = None if reason is None else DENIAL_PREFIX + reason
        event = Decided(
            call=call.call_id,
            decision=decision,
            by=held_by,
            reason=reason,
            result=result,
            reviewer=by or default_reviewer(),
            arguments_before=call.arguments,
            arguments=after,
        )
        (error,) = store.append([Append(run_id, held_by, [event], release=owner is None)])
        if error is not None:
            raise error
    except BaseException:
        store.release_run(run_id, held_by)
        raise
    decided = next(c for c in store.load_run(run_id).calls if c.call_id == call.call_id)
    return decided


def approve(
    store: Store,
    run_id: str,
    *,
    call_id: str | None = None,
    owner: str | None = None,
    arguments: dict[str, Any] | None = None,
    by: str | None = None,
    agent: Agent | None = None,
) -> ToolCallRecord:
    """Approve the awaiting call (the first one, or `call_id`); resume the run afterwards.

    `owner`: the lease id to hold the run under and resume it with (`Runner(owner=...)`);
    by default the run is claimed for the decision alone. `arguments`: the call runs with
    these instead (checked against the tool's schema and the rules' prefill, which needs
    the run's `agent`; `EditRefused` says why an edit is refused). `by`: who approves
    (default: the OS user), kept in the run's audit trail."""
    return _decide(
        store, run_id, call_id, owner, "approve", by=by, arguments=arguments, agent=agent
    )


def deny(
    store: Store,
    run_id: str,
    reason: str,
    *,
    call_id: str | None = None,
    owner: str | None = None,
    by: str | None = None,
) -> ToolCallRecord:
    """Deny the awaiting call: the model gets the reason as the call's error result."""
    return _decide(store, run_id, call_id, owner, "deny", reason, by=by)
