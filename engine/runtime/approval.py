"""Approving or denying a call that waits for a human; the run is then resumed as usual.

A decision is taken under the run's lease (`RunStore.claim_run`): of two reviewers deciding at
once, one claims the run and records its decision; the other gets `RunClaimed` (while the
first holds the run) or finds the call decided. So exactly one decision is ever executed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.runtime.resume import ResumeError

__all__ = ["DENIAL_PREFIX", "approve", "awaiting_calls", "deny"]

DENIAL_PREFIX = "Denied by a human reviewer; the call was not executed. Reason: "


def awaiting_calls(store: Any, run_id: str) -> list[Any]:
    """The run's calls that wait for approval, in the order the model made them."""
    return [c for c in store.pending_calls(run_id) if c.status == "awaiting_approval"]


def _pick(store: Any, run_id: str, call_id: str | None) -> Any:
    run = store.get_run(run_id)
    if run.status != "awaiting_approval":
        raise ResumeError(f"run {run.id} is {run.status}, not awaiting approval")
    waiting = awaiting_calls(store, run.id)
    if call_id is not None:
        chosen = [c for c in waiting if c.call_id == call_id]
        if not chosen:
            names = ", ".join(c.call_id for c in waiting) or "none"
            raise ResumeError(f"run {run.id}: no call {call_id!r} awaits approval ({names})")
        return chosen[0]
    if not waiting:
        decided = [c for c in store.pending_calls(run.id) if c.status == "approved"]
        if decided:
            # Approved by a process that stopped before it ran the call: resume runs it.
            raise ResumeError(
                f"run {run.id}: call {decided[0].call_id} ({decided[0].tool}) is approved "
                f"already and has not run yet; continue with: toolfsm runs resume {run.id[:12]}"
            )
        raise ResumeError(f"run {run.id}: no call awaits approval")
    return waiting[0]


def _decide(
    store: Any, run_id: str, call_id: str | None, owner: str | None, record: Callable[..., Any]
) -> Any:
    """Claim the run, pick the call, `record(call, held_by)` the decision under the lease.

    With `owner`, the lease is kept for the resume that follows (`Runner(owner=owner)`);
    without, it is released with the decision."""
    from engine.store import new_owner_id

    held_by = owner or new_owner_id()
    store.claim_run(run_id, held_by)
    try:
        call = _pick(store, run_id, call_id)
        decided = record(call, held_by)
    except BaseException:
        store.release_run(run_id, held_by)
        raise
    if owner is None:
        store.release_run(run_id, held_by)
    return decided


def approve(
    store: Any, run_id: str, *, call_id: str | None = None, owner: str | None = None
) -> Any:
    """Approve the awaiting call (the first one, or `call_id`); resume the run afterwards.

    `owner`: the lease id to hold the run under and resume it with (`Runner(owner=...)`);
    by default the run is claimed for the decision alone."""
    return _decide(
        store,
        run_id,
        call_id,
        owner,
        lambda call, held_by: store.set_call_status(
            run_id, call.call_id, "approved", owner=held_by
        ),
    )


def deny(
    store: Any,
    run_id: str,
    reason: str,
    *,
    call_id: str | None = None,
    owner: str | None = None,
) -> Any:
    """Deny the awaiting call: the model gets the reason as the call's error result."""
    return _decide(
        store,
        run_id,
        call_id,
        owner,
        lambda call, held_by: store.record_call_finished(
            run_id,
            call.call_id,
            status="denied",
            result=DENIAL_PREFIX + reason,
            is_error=True,
            owner=held_by,
        ),
    )
