"""Approving or denying a call that waits for a human; the run is then resumed as usual.

A decision is taken under the run's lease (`Store.claim_run`): of two reviewers deciding at
once, one claims the run and records its decision (a `decided` event); the other gets
`RunClaimed` (while the first holds the run) or finds the call decided. So exactly one
decision is ever executed.
"""

from __future__ import annotations

from typing import Literal

from engine.runtime.resume import ResumeError
from engine.store.ids import new_owner_id
from engine.store.protocol import Append, Store
from engine.store.records import ToolCallRecord
from engine.store.status import CallStatus, RunStatus

__all__ = ["DENIAL_PREFIX", "approve", "awaiting_calls", "deny"]

DENIAL_PREFIX = "Denied by a human reviewer; the call was not executed. Reason: "


def awaiting_calls(store: Store, run_id: str) -> list[ToolCallRecord]:
    """The run's calls that wait for approval, in the order the model made them."""
    return [c for c in store.pending_calls(run_id) if c.status is CallStatus.AWAITING_APPROVAL]


def _pick(store: Store, run_id: str, call_id: str | None) -> ToolCallRecord:
    run = store.get_run(run_id)
    if run.status is not RunStatus.AWAITING_APPROVAL:
        raise ResumeError(f"run {run.id} is {run.status}, not awaiting approval")
    pending = store.pending_calls(run.id)
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


def _decide(
    store: Store,
    run_id: str,
    call_id: str | None,
    owner: str | None,
    decision: Literal["approve", "deny"],
    reason: str | None = None,
) -> ToolCallRecord:
    """Claim the run, pick the call, record the decision under the lease; the call after.

    With `owner`, the lease is kept for the resume that follows (`Runner(owner=owner)`);
    without, it is released with the decision."""
    from engine.store.events import Decided

    held_by = owner or new_owner_id()
    store.claim_run(run_id, held_by)
    try:
        call = _pick(store, run_id, call_id)
        result = None if reason is None else DENIAL_PREFIX + reason
        event = Decided(
            call=call.call_id, decision=decision, by=held_by, reason=reason, result=result
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
    store: Store, run_id: str, *, call_id: str | None = None, owner: str | None = None
) -> ToolCallRecord:
    """Approve the awaiting call (the first one, or `call_id`); resume the run afterwards.

    `owner`: the lease id to hold the run under and resume it with (`Runner(owner=...)`);
    by default the run is claimed for the decision alone."""
    return _decide(store, run_id, call_id, owner, "approve")


def deny(
    store: Store,
    run_id: str,
    reason: str,
    *,
    call_id: str | None = None,
    owner: str | None = None,
) -> ToolCallRecord:
    """Deny the awaiting call: the model gets the reason as the call's error result."""
    return _decide(store, run_id, call_id, owner, "deny", reason)
