"""Approving or denying a call that waits for a human; the run is then resumed as usual."""

from __future__ import annotations

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
        raise ResumeError(f"run {run.id}: no call awaits approval")
    return waiting[0]


def approve(store: Any, run_id: str, *, call_id: str | None = None) -> Any:
    """Approve the awaiting call (the first one, or `call_id`); resume the run afterwards."""
    call = _pick(store, run_id, call_id)
    return store.set_call_status(run_id, call.call_id, "approved")


def deny(store: Any, run_id: str, reason: str, *, call_id: str | None = None) -> Any:
    """Deny the awaiting call: the model gets the reason as the call's error result."""
    call = _pick(store, run_id, call_id)
    return store.record_call_finished(
        run_id, call.call_id, status="denied", result=DENIAL_PREFIX + reason, is_error=True
    )
