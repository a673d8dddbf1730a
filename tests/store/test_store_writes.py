"""Batched writes (`RunStore.write`, `write_many`): same rows and errors as the methods."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from engine.store import (
    AgentNotFound,
    CallNotFound,
    CallStateConflict,
    DuplicateCall,
    DuplicateStep,
    InvalidValue,
    RunNotFound,
    RunStore,
    StepOutOfOrder,
    StepRecord,
    StoreConflict,
)
from engine.store.db import NotJsonSerialisable, json_dumps
from engine.store.tables import MessageRow, RunRow, StepRow, ToolCallRow
from engine.store.writes import (
    AppendMessages,
    CommitStep,
    CreateRun,
    Encoded,
    FinishCall,
    SetCallStatus,
    StartCall,
    StepValues,
    UpdateRun,
)

RULES = "tools: [lookup, delete_user]\n"
STARTED = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def _step(seq: int, **extra: Any) -> StepRecord:
    values: dict[str, Any] = {
        "seq": seq,
        "position_before": {"node": seq},
        "position_after": {"node": seq + 1},
        "allowed": ("lookup", "delete_user"),
        "force": True,
        "forced_tool": None,
        "tool_choice": {"type": "any"},
        "reply": {"role": "assistant", "text": "é ☃", "retries": 0},
        "decision": "continue",
        "reason": "continue_tool",
        "started_at": STARTED,
        "input_tokens": 5,
        "output_tokens": 7,
    }
    values.update(extra)
    return StepRecord(**values)


def _comparable(store: RunStore, run_id: str) -> dict[str, Any]:
    """The snapshot without the store's clock readings and the run id."""
    snap = store.load_run(run_id).model_dump()
    run = snap["run"]
    for key in ("id", "created_at", "updated_at"):
        run.pop(key)
    run["finished_at"] = run["finished_at"] is not None
    for call in snap["calls"]:
        call.pop("started_at")
        call["finished_at"] = call["finished_at"] is not None
    for step in snap["steps"]:
        step.pop("finished_at")
    for message in snap["messages"]:
        message.pop("created_at")
    snap.pop("agent")
    return snap


def _by_methods(store: RunStore, agent_id: int, run_id: str) -> None:
    store.create_run(
        agent_id, model="m", input="go", options={"a": [1]}, position={"node": 0}, run_id=run_id
    )
    store.append_messages(run_id, [{"role": "user", "text": "go"}])
    store.append_messages(run_id, [{"role": "assistant", "tool_calls": []}])
    store.record_call_started(
        run_id,
        "c1",
        step_seq=0,
        batch_index=0,
        tool="delete_user",
        arguments_raw='{"id": 1}',
        arguments={"id": 1},
        side_effects=True,
    )
    store.record_call_finished(
        run_id, "c1", status="finished", result={"ok": True}, is_error=False, duration_ms=3
    )
    store.record_call_started(
        run_id,
        "c2",
        step_seq=0,
        batch_index=1,
        tool="nope",
        arguments_raw="{",
        status="violation",
        violation="not allowed",
    )
    store.record_call_finished(run_id, "c2", status="violation", result="no", is_error=True)
    store.record_call_started(
        run_id,
        "c3",
        step_seq=0,
        batch_index=2,
        tool="lookup",
        arguments_raw="{}",
        status="awaiting_approval",
    )
    store.set_call_status(run_id, "c3", "approved")
    store.commit_step(
        run_id,
        _step(0),
        messages=[{"role": "tool", "tool_call_id": "c1", "text": "ok"}],
    )
    store.commit_step(
        run_id,
        _step(1, decision="stop", reason="terminal_tool"),
        messages=[],
        status="finished",
        stop_reason="terminal_tool",
    )
    store.update_run(run_id, status="running", stop_reason=None, error="again")


def _by_ops(store: RunStore, agent_id: int, run_id: str) -> None:
    store.write(
        run_id,
        [
            CreateRun(run_id, agent_id, "h", "m", "go", {"a": [1]}, position={"node": 0}),
            AppendMessages([{"role": "user", "text": "go"}]),
        ],
    )
    store.write(
        run_id,
        [
            AppendMessages([{"role": "assistant", "tool_calls": []}]),
            StartCall("c1", 0, 0, "delete_user", '{"id": 1}', {"id": 1}, side_effects=True),
        ],
    )
    store.write(
        run_id,
        [
            FinishCall("c1", "finished", {"ok": True}, False, 3),
            StartCall("c2", 0, 1, "nope", "{", status="violation", violation="not allowed"),
            FinishCall("c2", "violation", "no", True),
            StartCall("c3", 0, 2, "lookup", "{}", status="awaiting_approval"),
            SetCallStatus("c3", "approved"),
            CommitStep(_step(0), [{"role": "tool", "tool_call_id": "c1", "text": "ok"}]),
        ],
    )
    store.write(
        run_id,
        [
            CommitStep(
                _step(1, decision="stop", reason="terminal_tool"),
                status="finished",
                stop_reason="terminal_tool",
                first_message_seq=4,
            ),
            UpdateRun(status="running", stop_reason=None, error="again"),
        ],
    )


def test_operations_store_what_the_methods_store(store: RunStore) -> None:
    agent = store.save_agent("ops", RULES)
    _by_methods(store, agent.id, "by-methods")
    _by_ops(store, agent.id, "by-ops")
    by_methods = _comparable(store, "by-methods")
    by_ops = _comparable(store, "by-ops")
    by_ops["run"]["rules_hash"] = by_methods["run"]["rules_hash"]  # CreateRun takes it as given
    assert by_ops == by_methods
    assert by_ops["run"]["steps_count"] == 2 and len(by_ops["messages"]) == 3
    assert store.load_run("by-ops").steps[0].started_at == STARTED


def test_a_finished_run_gets_finished_at_and_keeps_it(store: RunStore) -> None:
    agent = store.save_agent("ops", RULES)
    store.write("r", [CreateRun("r", agent.id, "h", "m", "go", {})])
    store.write("r", [UpdateRun(status="finished", stop_reason="end_turn")])
    first = store.get_run("r").finished_at
    assert first is not None
    store.write("r", [UpdateRun(status="finished", error=None)])
    assert store.get_run("r").finished_at == first
    store.write("r", [UpdateRun(status="running")])
    assert store.get_run("r").finished_at is None


@pytest.fixture
def run_id(store: RunStore) -> str:
    agent = store.save_agent("ops", RULES)
    store.write("r1", [CreateRun("r1", agent.id, "h", "m", "go", {})])
    return "r1"


@pytest.mark.parametrize(
    ("ops", "error"),
    [
        ([CommitStep(_step(1))], StepOutOfOrder),
        ([FinishCall("missing", "finished", 1, False)], CallNotFound),
        ([SetCallStatus("missing", "approved")], CallNotFound),
        (
            [
                StartCall("c", 0, 0, "lookup", "{}"),
                FinishCall("c", "finished", 1, False),
                FinishCall("c", "finished", 1, False),
            ],
            CallStateConflict,
        ),
        (
            [StartCall("c", 0, 0, "lookup", "{}"), StartCall("c", 0, 1, "lookup", "{}")],
            DuplicateCall,
        ),
        ([AppendMessages([{"role": "user"}], first_seq=0)], StoreConflict),  # seq 0 is taken
        ([AppendMessages([{"text": "no role"}])], InvalidValue),
        ([AppendMessages([{"role": "user", "x": math.nan}])], InvalidValue),
        ([StartCall("c", 0, 0, "lookup", "{}", arguments={"when": object()})], InvalidValue),
    ],
)
def test_a_failing_batch_is_undone_whole_and_says_why(
    store: RunStore, run_id: str, ops: list[Any], error: type[Exception]
) -> None:
    before = store.load_run(run_id)
    with pytest.raises(error):
        # The message first: it must be undone with the rest.
        store.write(run_id, [AppendMessages([{"role": "assistant", "text": "hi"}]), *ops])
    assert store.load_run(run_id) == before


def test_a_committed_step_is_not_committed_twice(store: RunStore, run_id: str) -> None:
    store.write(run_id, [CommitStep(_step(0))])
    with pytest.raises(DuplicateStep):
        store.write(run_id, [CommitStep(_step(0))])


def test_unknown_run_and_agent(store: RunStore, run_id: str) -> None:
    with pytest.raises(RunNotFound):
        store.write("nope", [CommitStep(_step(0))])
    with pytest.raises(RunNotFound):
        store.write("nope", [AppendMessages([{"role": "user"}], first_seq=0)])
    with pytest.raises(RunNotFound):
        store.write("nope", [FinishCall("c", "finished", 1, False)])
    with pytest.raises(AgentNotFound):
        store.write("new", [CreateRun("new", 999_999, "h", "m", "go", {})])
    agent = store.save_agent("ops", RULES)
    with pytest.raises(StoreConflict, match="already exists"):
        store.write(run_id, [CreateRun(run_id, agent.id, "h", "m", "go", {})])


def test_operations_check_their_values() -> None:
    with pytest.raises(InvalidValue, match="run id"):
        CreateRun("Bad Id", 1, "h", "m", "go", {})
    with pytest.raises(InvalidValue, match="violation"):
        StartCall("c", 0, 0, "t", "{}", status="violation")
    with pytest.raises(InvalidValue, match="starts as"):
        StartCall("c", 0, 0, "t", "{}", status="finished")
    with pytest.raises(InvalidValue, match="call status"):
        FinishCall("c", "done", 1, False)
    with pytest.raises(InvalidValue, match="run status"):
        UpdateRun(status="sleeping")


def test_group_commit_undoes_only_the_failing_batches(store: RunStore) -> None:
    agent = store.save_agent("ops", RULES)
    ids = [f"g{i}" for i in range(4)]
    assert (
        store.write_many([(i, [CreateRun(i, agent.id, "h", "m", "go", {})]) for i in ids])
        == [None] * 4
    )
    errors = store.write_many(
        [
            ("g0", [CommitStep(_step(0))]),
            ("g1", [AppendMessages([{"role": "user"}]), CommitStep(_step(3))]),
            ("g2", [CommitStep(_step(0))]),
            ("nope", [CommitStep(_step(0))]),
            ("g3", [AppendMessages([{"role": "user", "text": "x"}], first_seq=0)]),
        ]
    )
    assert [type(error).__name__ if error else None for error in errors] == [
        None,
        "StepOutOfOrder",
        None,
        "RunNotFound",
        None,
    ]
    assert [store.get_run(i).steps_count for i in ids] == [1, 0, 1, 0]
    assert store.load_run("g1").messages == ()
    assert [m.content for m in store.load_run("g3").messages] == [{"role": "user", "text": "x"}]
    assert store.write_many([]) == []


def test_group_commit_of_planned_batches_finds_the_failing_ones(store: RunStore) -> None:
    # Every batch numbers its own messages, so the runs' statements run side by side
    # (executemany); a duplicate call and a wrong step number send it back one run at a time.
    agent = store.save_agent("ops", RULES)
    ids = [f"p{i}" for i in range(4)]
    store.write_many([(i, [CreateRun(i, agent.id, "h", "m", "go", {})]) for i in ids])
    store.write("p1", [StartCall("dup", 0, 0, "lookup", "{}")])

    def batch(run_id: str, step: StepRecord, call_id: str = "c") -> list[Any]:
        return [
            AppendMessages([{"role": "assistant", "text": run_id}], first_seq=0),
            StartCall(call_id, 0, 0, "lookup", "{}"),
            FinishCall(call_id, "finished", {"ok": run_id}, False, 1),
            CommitStep(step, [{"role": "tool", "text": "ok"}], first_message_seq=1),
        ]

    errors = store.write_many(
        [
            ("p0", batch("p0", _step(0))),
            ("p1", batch("p1", _step(0), call_id="dup")),
            ("p2", batch("p2", _step(4))),
            ("p3", batch("p3", _step(0))),
        ]
    )
    assert [type(error).__name__ if error else None for error in errors] == [
        None,
        "DuplicateCall",
        "StepOutOfOrder",
        None,
    ]
    for run_id, committed in (("p0", True), ("p1", False), ("p2", False), ("p3", True)):
        snapshot = store.load_run(run_id)
        assert snapshot.run.steps_count == int(committed)
        assert len(snapshot.messages) == (2 if committed else 0)
    (call,) = store.load_run("p3").calls
    assert (call.status, call.result, call.finished_at is not None) == (
        "finished",
        {"ok": "p3"},
        True,
    )
    assert store.write_many([(i, [UpdateRun(error="x")]) for i in ids]) == [None] * 4


def _raw_rows(store: RunStore, table: str, run_id: str) -> list[dict[str, Any]]:
    """The rows as the driver returns them (SQLite: JSON and timestamps as stored text)."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            text(f"SELECT * FROM {table} WHERE run_id = :run ORDER BY 2"), {"run": run_id}
        )
        return [{**row._mapping, "run_id": None} for row in rows]


def test_the_write_path_stores_what_the_orm_stores(store: RunStore) -> None:
    # The hot path's row builders convert each value themselves (JSON once, timestamps once
    # per transaction, booleans); the stored rows must be the ORM's, byte for byte.
    agent = store.save_agent("ops", RULES)
    local = timezone(timedelta(hours=2))
    started = datetime(2030, 1, 2, 5, 4, 5, 678901, tzinfo=local)
    finished = datetime(2030, 1, 2, 3, 4, 6, tzinfo=UTC)
    reply = {"role": "assistant", "text": 'é ☃ "q"', "n": [1, 2.5, None, True]}
    position = {"node": "a", "counts": {"x": 1}}
    step = StepValues(
        seq=0,
        position_before=Encoded(position),
        position_after=Encoded({"node": "b"}),
        allowed=("lookup", "delete_user"),
        force=True,
        forced_tool="lookup",
        tool_choice=Encoded(None),
        reply=Encoded(reply),
        decision="continue",
        reason="why",
        started_at=started,
        finished_at=finished,
        input_tokens=3,
        output_tokens=4,
    )
    store.write("hot", [CreateRun("hot", agent.id, "h", "m", "go", {}, position=position)])
    store.write(
        "hot",
        [
            AppendMessages([reply, MappingProxyType({"role": "user", "k": "v"})], first_seq=0),
            StartCall("c1", 0, 0, "delete_user", "{}", {"id": 1}, side_effects=True),
            StartCall("c2", 0, 1, "lookup", "{}", {"q": "é"}),
            FinishCall("c2", "finished", [1, {"a": None}], False, 2, arguments={"q": "e"}),
        ],
    )
    store.write(
        "hot",
        [
            FinishCall("c1", "error", "boom", True, 5, arguments={"id": 2}),
            CommitStep(step, [{"role": "tool", "text": "ok"}], first_message_seq=2),
        ],
    )
    calls = {call.call_id: call for call in store.load_run("hot").calls}
    messages = store.load_run("hot").messages
    with Session(store.engine) as session:
        session.add(
            RunRow(
                id="orm",
                agent_id=agent.id,
                rules_hash="h",
                model="m",
                input="go",
                options={},
                status="running",
                created_at=finished,
                updated_at=finished,
            )
        )
        session.flush()  # the parent row first (the rows have no ORM relationships)
        session.add(
            StepRow(
                run_id="orm",
                seq=0,
                position_before=position,
                position_after={"node": "b"},
                allowed=["lookup", "delete_user"],
                force=True,
                forced_tool="lookup",
                tool_choice=None,
                reply=reply,
                decision="continue",
                reason="why",
                started_at=started.astimezone(UTC),
                finished_at=finished,
                input_tokens=3,
                output_tokens=4,
            )
        )
        for call_id, arguments, status, result, is_error, duration, side_effects in (
            ("c1", {"id": 2}, "error", "boom", True, 5, True),
            ("c2", {"q": "e"}, "finished", [1, {"a": None}], False, 2, False),
        ):
            call = calls[call_id]
            session.add(
                ToolCallRow(
                    run_id="orm",
                    call_id=call_id,
                    step_seq=0,
                    batch_index=call.batch_index,
                    tool=call.tool,
                    arguments_raw="{}",
                    arguments=arguments,
                    status=status,
                    result=result,
                    is_error=is_error,
                    side_effects=side_effects,
                    started_at=call.started_at,
                    finished_at=call.finished_at,
                    duration_ms=duration,
                )
            )
        for message in messages:
            session.add(
                MessageRow(
                    run_id="orm",
                    seq=message.seq,
                    role=message.role,
                    content=message.content,
                    step_seq=message.step_seq,
                    created_at=message.created_at,
                )
            )
        session.commit()
    for table in ("step", "tool_call", "message"):
        assert _raw_rows(store, table, "hot") == _raw_rows(store, table, "orm"), table


def test_json_text_is_the_standard_encoders() -> None:
    encoder = json.JSONEncoder(allow_nan=False, ensure_ascii=False)
    for value in (1, 2.5, 'é ☃ "q"\n', None, True, [1, {"a": [None]}], {"b": 1, 3: "x"}, (1,)):
        assert json_dumps(value) == encoder.encode(value)
    circular: list[Any] = []
    circular.append(circular)
    for bad in (math.inf, {"x": math.nan}, object(), {(1,): 2}, circular):
        with pytest.raises(NotJsonSerialisable):
            json_dumps(bad)
