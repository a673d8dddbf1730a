"""Tool calls in the journal: started, finished, held for approval, decided, refused."""

from __future__ import annotations

import pytest

from engine.store import SqlStore
from engine.store.errors import CallNotFound, CallStateConflict, RunStateConflict
from engine.store.events import Decided, Resumed
from engine.store.status import CallStatus, RunStatus
from tests.store._journal import append, committed, done, new_run, opened, paused, started


def test_a_call_started_then_finished(store: SqlStore) -> None:
    run_id = new_run(store)
    append(store, run_id, started(0, opened("c1", 0)))
    (pending,) = store.load_run(run_id).pending_calls
    assert (pending.status, pending.is_pending, pending.result) == ("started", True, None)
    assert (pending.tool, pending.arguments, pending.arguments_raw) == (
        "charge",
        {"amount": 1},
        '{"amount": 1}',
    )
    append(store, run_id, committed(0, done("c1", {"ok": True}, duration_ms=12)))
    (call,) = store.load_run(run_id).calls
    assert (call.status, call.result, call.is_error, call.duration_ms) == (
        CallStatus.FINISHED,
        {"ok": True},
        False,
        12,
    )
    assert call.finished_at is not None and call.finished_at >= call.started_at
    assert store.load_run(run_id).pending_calls == ()


def test_an_error_result_and_new_arguments(store: SqlStore) -> None:
    run_id = new_run(store)
    fixed = {"amount": 2}
    append(
        store,
        run_id,
        committed(
            0, opened("c1", 0), done("c1", "boom", status="error", is_error=True, arguments=fixed)
        ),
    )
    (call,) = store.load_run(run_id).calls
    assert (call.status, call.result, call.is_error, call.arguments) == (
        "error",
        "boom",
        True,
        fixed,
    )


def test_a_violation_is_recorded_with_its_reason(store: SqlStore) -> None:
    run_id = new_run(store)
    reason = "charge is not allowed here"
    entry = opened(
        "c1", 0, status="violation", violation=reason, done=True, result=reason, is_error=True
    )
    append(store, run_id, committed(0, entry))
    (call,) = store.load_run(run_id).calls
    assert (call.status, call.violation, call.is_error, call.is_pending) == (
        "violation",
        reason,
        True,
        False,
    )


def test_approval_and_denial_are_decisions(store: SqlStore) -> None:
    run_id = new_run(store)
    append(store, run_id, started(0, opened("c1", 0, status="awaiting_approval")))
    append(store, run_id, started(0, opened("c2", 0, 1, status="awaiting_approval")), paused(0))
    (first, second) = store.load_run(run_id).pending_calls
    assert first.status == second.status == "awaiting_approval"
    append(store, run_id, Decided(call="c1", decision="approve", by="reviewer"))
    append(store, run_id, Decided(call="c2", decision="deny", reason="no", result="Denied: no"))
    approved, denied = store.load_run(run_id).calls
    assert (approved.status, approved.is_pending) == ("approved", True)
    assert (denied.status, denied.result, denied.is_error, denied.is_pending) == (
        "denied",
        "Denied: no",
        True,
        False,
    )
    # Steps wait for the resume; the approved call then runs as any other.
    with pytest.raises(RunStateConflict, match="is 'awaiting_approval', expected 'running'"):
        append(store, run_id, committed(0))
    append(store, run_id, Resumed(previous=RunStatus.AWAITING_APPROVAL))
    append(store, run_id, committed(0, opened("c1", 0, status="started"), done("c1")))
    assert store.load_run(run_id).calls[0].status == "finished"


def test_a_decision_needs_a_call_that_can_take_it(store: SqlStore) -> None:
    run_id = new_run(store)
    append(
        store, run_id, started(0, opened("c1", 0), opened("c2", 0, 1, status="awaiting_approval"))
    )
    with pytest.raises(CallNotFound, match="run run-1 has no tool call with id 'ghost'"):
        append(store, run_id, Decided(call="ghost", decision="approve"))
    with pytest.raises(
        CallStateConflict, match="'c1' of run run-1 is 'started' and cannot become 'approved'"
    ):
        append(store, run_id, Decided(call="c1", decision="approve"))
    append(store, run_id, Decided(call="c2", decision="deny", result="no"))
    with pytest.raises(CallStateConflict, match="nothing \\(its result is recorded\\)"):
        append(store, run_id, Decided(call="c2", decision="approve"))
    # An interrupted side-effect call may be given up (or retried), once.
    append(store, run_id, Decided(call="c1", decision="mark_failed", result="interrupted"))
    with pytest.raises(CallStateConflict):
        append(store, run_id, Decided(call="c1", decision="retry"))
    c1, c2 = store.load_run(run_id).calls
    assert (c1.status, c1.result, c1.is_error) == ("failed", "interrupted", True)
    assert c2.status == "denied"


def test_pending_calls_keep_the_models_order(store: SqlStore) -> None:
    run_id = new_run(store)
    append(store, run_id, committed(0, opened("z", 0, 1), opened("a", 0, 0), done("a")))
    append(store, run_id, started(1, opened("m", 1, 0)))
    assert [c.call_id for c in store.load_run(run_id).pending_calls] == ["z", "m"]
    assert [c.call_id for c in store.load_run(run_id).calls] == ["a", "z", "m"]
