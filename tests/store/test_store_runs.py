"""RunStore behaviour on both backends: agents, runs, steps, messages, lookups."""

from __future__ import annotations

import hashlib
from datetime import UTC, timedelta

import pytest
from pydantic import JsonValue, ValidationError

from engine.store import (
    AgentNotFound,
    AgentRecord,
    AmbiguousRunId,
    DuplicateStep,
    InvalidValue,
    RunNotFound,
    RunRecord,
    RunStateConflict,
    RunStatus,
    RunStore,
    StepOutOfOrder,
    StepRecord,
    StoreConflict,
)

RULES = "tools: [search, answer]\nrules:\n  - init: search\n"


def make_step(
    seq: int, *, before: JsonValue = None, after: JsonValue = None, **extra: object
) -> StepRecord:
    return StepRecord(
        seq=seq,
        position_before=before if before is not None else {"state": f"s{seq}"},
        position_after=after if after is not None else {"state": f"s{seq + 1}"},
        allowed=("search", "answer"),
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def agent(store: RunStore) -> AgentRecord:
    return store.save_agent("triage", RULES, "rules/triage.yaml")


@pytest.fixture
def run(store: RunStore, agent: AgentRecord) -> RunRecord:
    return store.create_run(
        agent.id,
        model="scripted:demo",
        input="find the invoice",
        options={"max_steps": 5, "continuation": "auto"},
        position={"state": "s0", "counts": {}},
    )


# --- agents -------------------------------------------------------------------------------


def test_save_agent_is_idempotent_on_name_and_hash(store: RunStore) -> None:
    first = store.save_agent("triage", RULES, "rules/triage.yaml")
    again = store.save_agent("triage", RULES, "moved/triage.yaml")
    assert again == first  # same row, first path kept
    assert first.rules_hash == hashlib.sha256(RULES.encode()).hexdigest()

    edited = store.save_agent("triage", RULES + "  - terminal: answer\n", "rules/triage.yaml")
    renamed = store.save_agent("other", RULES, None)
    assert len({first.id, edited.id, renamed.id}) == 3
    assert renamed.rules_path is None
    assert store.get_agent(edited.id) == edited


def test_get_agent_missing(store: RunStore) -> None:
    with pytest.raises(AgentNotFound, match="no agent with id 999"):
        store.get_agent(999)


# --- runs ---------------------------------------------------------------------------------


def test_create_run_starts_running(store: RunStore, agent: AgentRecord, run: RunRecord) -> None:
    assert run.status is RunStatus.RUNNING
    assert (run.agent_id, run.agent_name, run.rules_hash) == (agent.id, "triage", agent.rules_hash)
    assert run.options == {"max_steps": 5, "continuation": "auto"}
    assert run.position == {"state": "s0", "counts": {}}
    assert (run.steps_count, run.input_tokens, run.output_tokens) == (0, 0, 0)
    assert run.stop_reason is None and run.error is None and run.finished_at is None
    assert len(run.id) == 32 and int(run.id, 16) >= 0
    assert store.get_run(run.id) == run


def test_create_run_checks_agent_and_id(store: RunStore, agent: AgentRecord) -> None:
    with pytest.raises(AgentNotFound):
        store.create_run(12345, model="m:x", input="")
    store.create_run(agent.id, model="m:x", input="", run_id="replay-1")
    with pytest.raises(StoreConflict, match="already exists"):
        store.create_run(agent.id, model="m:x", input="", run_id="replay-1")
    with pytest.raises(InvalidValue, match="run id"):
        store.create_run(agent.id, model="m:x", input="", run_id="Has Spaces")
    with pytest.raises(InvalidValue, match="model"):
        store.create_run(agent.id, model=" ", input="")


def test_run_lifecycle(store: RunStore, run: RunRecord) -> None:
    after_step = store.commit_step(
        run.id, make_step(0, input_tokens=100, output_tokens=20, decision="continue")
    )
    assert after_step.steps_count == 1
    assert after_step.position == {"state": "s1"}
    assert (after_step.input_tokens, after_step.output_tokens) == (100, 20)
    assert after_step.updated_at >= run.updated_at

    paused = store.update_run(
        run.id, status=RunStatus.AWAITING_APPROVAL, stop_reason="awaiting_approval"
    )
    assert paused.status is RunStatus.AWAITING_APPROVAL and paused.finished_at is None

    resumed = store.update_run(
        run.id, status="running", stop_reason=None, expect_status="awaiting_approval"
    )
    assert resumed.status is RunStatus.RUNNING and resumed.stop_reason is None
    with pytest.raises(RunStateConflict, match="is 'running', expected 'awaiting_approval'"):
        store.update_run(run.id, status="running", expect_status=RunStatus.AWAITING_APPROVAL)

    store.commit_step(
        run.id, make_step(1, input_tokens=5), status="finished", stop_reason="end_turn"
    )
    done = store.update_run(run.id, add_input_tokens=1, add_output_tokens=2)
    assert done.status is RunStatus.FINISHED and done.status.is_terminal
    assert done.stop_reason == "end_turn"
    assert done.finished_at is not None and done.finished_at.tzinfo is not None
    assert (done.input_tokens, done.output_tokens, done.steps_count) == (106, 22, 2)
    assert done.position == {"state": "s2"}

    failed = store.update_run(run.id, status="failed", stop_reason="error", error="boom")
    assert failed.error == "boom" and failed.finished_at is not None
    assert store.get_run(run.id) == failed


def test_update_run_rejects_bad_values(store: RunStore, run: RunRecord) -> None:
    with pytest.raises(InvalidValue, match="unknown run status 'done'; expected one of"):
        store.update_run(run.id, status="done")
    with pytest.raises(InvalidValue, match="must not be negative"):
        store.update_run(run.id, add_input_tokens=-1)
    with pytest.raises(RunNotFound, match="no run with id 'nope'"):
        store.update_run("nope", status="finished")
    assert store.get_run(run.id) == run


def test_position_can_be_cleared_and_json_round_trips(store: RunStore, run: RunRecord) -> None:
    payload = {"état": "naïve ✓", "nested": [1, 2.5, None, True, {"k": []}], "n": 10**12}
    assert store.update_run(run.id, position=payload).position == payload
    assert store.update_run(run.id, position=None).position is None
    assert store.get_run(run.id).position is None


# --- steps --------------------------------------------------------------------------------


def test_steps_are_append_only(store: RunStore, run: RunRecord) -> None:
    store.commit_step(run.id, make_step(0))
    store.commit_step(run.id, make_step(1))
    with pytest.raises(DuplicateStep) as caught:
        store.commit_step(
            run.id, make_step(1, after={"state": "overwritten"}), messages=[{"role": "user"}]
        )
    assert str(caught.value) == (
        f"run {run.id} already has step 1; steps are append-only (the next step is 2)"
    )
    with pytest.raises(StepOutOfOrder, match="the next step must be 2, got 5"):
        store.append_step(run.id, make_step(5))

    snapshot = store.load_run(run.id)
    assert [step.seq for step in snapshot.steps] == [0, 1]
    assert snapshot.steps[1].position_after == {"state": "s2"}
    assert snapshot.messages == ()  # the rejected commit wrote nothing at all
    assert snapshot.run.steps_count == 2


def test_step_round_trip(store: RunStore, run: RunRecord) -> None:
    step = make_step(
        0,
        force=True,
        forced_tool="search",
        tool_choice={"type": "tool", "name": "search"},
        reply={"text": "", "tool_calls": [{"id": "c1", "name": "search", "arguments": "{}"}]},
        decision="continue",
        reason="child rule of search",
        input_tokens=3,
        output_tokens=4,
    )
    store.commit_step(run.id, step)
    (stored,) = store.load_run(run.id).steps
    assert stored.model_dump(exclude={"finished_at", "started_at"}) == step.model_dump(
        exclude={"finished_at", "started_at"}
    )
    assert abs(stored.started_at - step.started_at) < timedelta(milliseconds=1)
    assert stored.finished_at is not None and stored.finished_at >= stored.started_at
    assert stored.started_at.tzinfo == UTC


def test_failed_commit_is_atomic(store: RunStore, run: RunRecord) -> None:
    with pytest.raises(InvalidValue, match="not JSON-serialisable"):
        store.commit_step(
            run.id, make_step(0), messages=[{"role": "tool", "content": float("nan")}]
        )
    snapshot = store.load_run(run.id)
    assert snapshot.steps == () and snapshot.messages == ()
    assert snapshot.run == run


def test_step_record_validates_input() -> None:
    with pytest.raises(ValidationError):
        StepRecord(seq=-1, position_before=None, position_after=None, allowed=())
    with pytest.raises(ValidationError):
        StepRecord(seq=0, position_before=None, position_after=None, allowed=(), decison="stop")  # type: ignore[call-arg]
    step = make_step(0)
    with pytest.raises(ValidationError):
        step.seq = 3


# --- messages -----------------------------------------------------------------------------


def test_messages_keep_their_order(store: RunStore, run: RunRecord) -> None:
    first = store.append_messages(
        run.id, [{"role": "system", "content": "rules"}, {"role": "user", "content": "hi"}]
    )
    assert [(m.seq, m.role, m.step_seq) for m in first] == [(0, "system", None), (1, "user", None)]
    assistant = {
        "role": "assistant",
        "content": [{"type": "text", "text": "calling"}],
        "provider_state": {"anthropic": {"signature": "abc"}},
    }
    store.commit_step(run.id, make_step(0), messages=[assistant, {"role": "tool", "content": "ok"}])
    store.append_messages(run.id, [{"role": "user", "content": "more"}])
    assert store.append_messages(run.id, []) == []

    snapshot = store.load_run(run.id)
    assert [m.seq for m in snapshot.messages] == [0, 1, 2, 3, 4]
    assert [m.step_seq for m in snapshot.messages] == [None, None, 0, 0, None]
    assert snapshot.conversation[2] == assistant
    assert [m["role"] for m in snapshot.conversation] == [
        "system",
        "user",
        "assistant",
        "tool",
        "user",
    ]


def test_message_needs_a_role(store: RunStore, run: RunRecord) -> None:
    with pytest.raises(InvalidValue, match=r"message 1 .* non-empty 'role'"):
        store.append_messages(run.id, [{"role": "user"}, {"content": "no role"}])
    assert store.load_run(run.id).messages == ()
    with pytest.raises(RunNotFound):
        store.append_messages("missing", [{"role": "user"}])


# --- listing and lookup -------------------------------------------------------------------


def test_list_runs_filters_and_orders(store: RunStore, agent: AgentRecord) -> None:
    other = store.save_agent("billing", "tools: [pay]\n")
    ids = [store.create_run(agent.id, model="m:x", input=str(i)).id for i in range(3)]
    billing = store.create_run(other.id, model="m:x", input="pay").id
    store.update_run(ids[0], status="finished")
    store.update_run(ids[1], status="awaiting_approval")

    assert [r.id for r in store.list_runs()] == [billing, ids[2], ids[1], ids[0]]
    assert [r.id for r in store.list_runs(limit=2)] == [billing, ids[2]]
    assert [r.id for r in store.list_runs(status="running")] == [billing, ids[2]]
    assert [r.id for r in store.list_runs(status=["finished", RunStatus.AWAITING_APPROVAL])] == [
        ids[1],
        ids[0],
    ]
    assert [r.id for r in store.list_runs(agent="triage", status="running")] == [ids[2]]
    assert [r.agent_name for r in store.list_runs(agent="billing")] == ["billing"]
    assert store.list_runs(agent="nobody") == []
    with pytest.raises(InvalidValue, match="limit"):
        store.list_runs(limit=0)
    with pytest.raises(InvalidValue, match="unknown run status"):
        store.list_runs(status="finito")


def test_find_run_by_prefix(store: RunStore, agent: AgentRecord) -> None:
    for run_id in ("abc1", "abc2", "abd", "x_1", "xy"):
        store.create_run(agent.id, model="m:x", input="", run_id=run_id)

    assert store.find_run("abd").id == "abd"
    assert store.find_run("ab" + "D").id == "abd"  # typed prefixes are folded to lower case
    assert store.find_run("abc1").id == "abc1"
    assert store.find_run("x_").id == "x_1"  # '_' is literal, not a LIKE wildcard
    with pytest.raises(AmbiguousRunId, match=r"'abc' matches several runs \(abc1, abc2\)"):
        store.find_run("abc")
    with pytest.raises(RunNotFound, match="no run whose id starts with 'zz'"):
        store.find_run("zz")
    with pytest.raises(RunNotFound):
        store.find_run("%")
    with pytest.raises(InvalidValue, match="empty"):
        store.find_run("  ")


def test_find_run_exact_id_wins_and_lists_few_candidates(
    store: RunStore, agent: AgentRecord
) -> None:
    for run_id in ("run", "run-1", "run-2", "run-3", "run-4", "run-5", "run-6"):
        store.create_run(agent.id, model="m:x", input="", run_id=run_id)
    assert store.find_run("run").id == "run"
    with pytest.raises(AmbiguousRunId) as caught:
        store.find_run("run-")
    assert caught.value.candidates == ("run-1", "run-2", "run-3", "run-4", "run-5")
    assert str(caught.value).endswith("run-5, ...); type more characters")


def test_generated_ids_have_short_unique_prefixes(store: RunStore, agent: AgentRecord) -> None:
    run = store.create_run(agent.id, model="m:x", input="")
    assert store.find_run(run.id[:8]) == run
    assert store.find_run(run.id.upper()) == run


def test_missing_runs(store: RunStore) -> None:
    for call in (store.get_run, store.load_run, store.pending_calls):
        with pytest.raises(RunNotFound, match="no run with id 'ghost'"):
            call("ghost")
    with pytest.raises(LookupError):  # the not-found errors are also LookupErrors
        store.get_run("ghost")


def test_records_are_detached_and_frozen(store_url: str) -> None:
    from engine.store import open_store

    with open_store(store_url) as store:
        agent = store.save_agent("triage", RULES)
        run = store.create_run(agent.id, model="m:x", input="hi", options={"a": [1]})
        store.commit_step(run.id, make_step(0), messages=[{"role": "user", "content": "hi"}])
        snapshot = store.load_run(run.id)
    # Store closed: every field is already loaded, nothing lazy is left to fetch.
    assert snapshot.run.options == {"a": [1]}
    assert snapshot.agent.rules_text == RULES
    assert snapshot.messages[0].content == {"role": "user", "content": "hi"}
    with pytest.raises(ValidationError):
        snapshot.run.status = RunStatus.FAILED
