"""Tool calls: started -> finished, approvals, violations, pending calls, illegal moves."""

from __future__ import annotations

import pytest

from engine.store import (
    CallNotFound,
    CallStateConflict,
    CallStatus,
    DuplicateCall,
    InvalidValue,
    RunRecord,
    RunStore,
)


@pytest.fixture
def run(store: RunStore) -> RunRecord:
    agent = store.save_agent("ops", "tools: [lookup, delete_user]\n")
    return store.create_run(agent.id, model="scripted:demo", input="clean up")


def start(store: RunStore, run: RunRecord, call_id: str, **extra: object) -> None:
    kwargs: dict[str, object] = {
        "step_seq": 0,
        "batch_index": 0,
        "tool": "lookup",
        "arguments_raw": '{"q": "x"}',
        "arguments": {"q": "x"},
    }
    kwargs.update(extra)
    store.record_call_started(run.id, call_id, **kwargs)  # type: ignore[arg-type]


def test_call_started_then_finished(store: RunStore, run: RunRecord) -> None:
    started = store.record_call_started(
        run.id,
        "call_1",
        step_seq=0,
        batch_index=0,
        tool="lookup",
        arguments_raw='{"q": "x", }',
        arguments=None,
        side_effects=False,
    )
    assert started.status is CallStatus.STARTED and started.is_pending
    assert store.pending_calls(run.id) == [started]

    finished = store.record_call_finished(
        run.id,
        "call_1",
        status=CallStatus.FINISHED,
        result={"message": "found 3"},
        is_error=False,
        duration_ms=12,
        arguments={"q": "x", "limit": 10},  # validated and merged with prefilled values
    )
    assert finished.status is CallStatus.FINISHED and not finished.is_pending
    assert finished.result == {"message": "found 3"}
    assert finished.arguments == {"q": "x", "limit": 10}
    assert finished.arguments_raw == '{"q": "x", }'
    assert finished.duration_ms == 12
    assert finished.finished_at is not None and finished.finished_at >= finished.started_at
    assert store.pending_calls(run.id) == []
    assert store.load_run(run.id).calls == (finished,)


def test_error_results_and_text_results(store: RunStore, run: RunRecord) -> None:
    start(store, run, "c1")
    failed = store.record_call_finished(
        run.id, "c1", status="error", result="ValueError: bad id", is_error=True, duration_ms=1
    )
    assert (failed.status, failed.result, failed.is_error) == (
        CallStatus.ERROR,
        "ValueError: bad id",
        True,
    )


def test_approval_flow(store: RunStore, run: RunRecord) -> None:
    start(store, run, "a1", tool="delete_user", side_effects=True, status="awaiting_approval")
    start(store, run, "d1", tool="delete_user", batch_index=1, status="awaiting_approval")
    assert [c.call_id for c in store.pending_calls(run.id)] == ["a1", "d1"]

    assert store.set_call_status(run.id, "a1", "approved").status is CallStatus.APPROVED
    assert store.set_call_status(run.id, "a1", "started").status is CallStatus.STARTED
    done = store.record_call_finished(run.id, "a1", status="finished", result="ok", is_error=False)
    assert done.side_effects and done.duration_ms is None

    store.set_call_status(run.id, "d1", CallStatus.DENIED)
    assert [c.call_id for c in store.pending_calls(run.id)] == ["d1"]  # no result sent yet
    denied = store.record_call_finished(
        run.id, "d1", status="denied", result="denied by operator: too risky", is_error=True
    )
    assert denied.status is CallStatus.DENIED
    assert store.pending_calls(run.id) == []


def test_violation_is_recorded_with_its_reason(store: RunStore, run: RunRecord) -> None:
    call = store.record_call_started(
        run.id,
        "v1",
        step_seq=2,
        batch_index=1,
        tool="delete_user",
        arguments_raw="{}",
        status="violation",
        violation="delete_user is not allowed after lookup (child rule: lookup -> answer)",
    )
    assert call.status is CallStatus.VIOLATION and call.violation is not None
    store.record_call_finished(
        run.id, "v1", status="violation", result={"error": call.violation}, is_error=True
    )
    with pytest.raises(InvalidValue, match="exactly when status is 'violation'"):
        start(store, run, "v2", status="violation")
    with pytest.raises(InvalidValue, match="exactly when status is 'violation'"):
        start(store, run, "v3", violation="why")


def test_illegal_call_transitions(store: RunStore, run: RunRecord) -> None:
    start(store, run, "c1")
    with pytest.raises(CallStateConflict, match="'started' and cannot become 'approved'"):
        store.set_call_status(run.id, "c1", "approved")
    with pytest.raises(CallStateConflict, match="may become: error, failed, finished"):
        store.record_call_finished(run.id, "c1", status="denied", result=None, is_error=True)
    store.record_call_finished(run.id, "c1", status="finished", result=1, is_error=False)
    # A recorded result is final: a second process resuming the run cannot run it again.
    with pytest.raises(CallStateConflict, match="nothing \\(its result is recorded\\)"):
        store.record_call_finished(run.id, "c1", status="finished", result=2, is_error=False)
    with pytest.raises(InvalidValue, match="a call starts as one of"):
        start(store, run, "c2", status="finished")
    with pytest.raises(InvalidValue, match="unknown call status 'done'"):
        store.set_call_status(run.id, "c1", "done")


def test_call_ids_are_unique_per_run(store: RunStore, run: RunRecord) -> None:
    start(store, run, "dup")
    with pytest.raises(DuplicateCall, match="already has a tool call with id 'dup'"):
        start(store, run, "dup", batch_index=1)
    agent = store.save_agent("ops", "tools: [lookup, delete_user]\n")
    other = store.create_run(agent.id, model="m:x", input="")
    start(store, other, "dup")  # the same provider id in another run is fine


def test_unknown_calls_and_runs(store: RunStore, run: RunRecord) -> None:
    with pytest.raises(CallNotFound, match=f"run {run.id} has no tool call with id 'nope'"):
        store.set_call_status(run.id, "nope", "failed")
    with pytest.raises(LookupError):
        store.record_call_finished(run.id, "nope", status="failed", result=None, is_error=True)
    with pytest.raises(LookupError):
        start(store, run.model_copy(update={"id": "ghost"}), "c1")


def test_pending_calls_order_and_crash_recovery(store: RunStore, run: RunRecord) -> None:
    start(store, run, "s1-b", step_seq=1, batch_index=1)
    start(store, run, "s0", step_seq=0, batch_index=0)
    start(store, run, "s1-a", step_seq=1, batch_index=0)
    assert [c.call_id for c in store.pending_calls(run.id)] == ["s0", "s1-a", "s1-b"]
    # What a resuming loop does with a call cut off by a crash: mark it failed, then record
    # the error result it sends to the model.
    store.set_call_status(run.id, "s0", "failed")
    store.record_call_finished(run.id, "s0", status="failed", result="interrupted", is_error=True)
    assert [c.call_id for c in store.pending_calls(run.id)] == ["s1-a", "s1-b"]
