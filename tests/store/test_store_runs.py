"""The store on both backends: agents, runs and their journals read back, lookups."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from engine.store import SqlStore
from engine.store.errors import (
    AgentNotFound,
    AmbiguousRunId,
    InvalidValue,
    RunNotFound,
    RunStateConflict,
    StoreConflict,
)
from engine.store.events import Resumed, RunCreated
from engine.store.ids import new_run_id
from engine.store.status import RunStatus
from tests.store._journal import (
    OWNER,
    RULES,
    append,
    committed,
    done,
    new_run,
    opened,
    paused,
    started,
    stopped,
)

# --- agents -------------------------------------------------------------------------------


def test_save_agent_is_idempotent_on_name_and_hash(store: SqlStore) -> None:
    first = store.save_agent("triage", RULES, "rules/triage.yaml")
    again = store.save_agent("triage", RULES, "moved/triage.yaml")
    assert again == first  # same row, first path kept
    assert first.rules_hash == hashlib.sha256(RULES.encode()).hexdigest()
    edited = store.save_agent("triage", RULES + "  - terminal: answer\n", "rules/triage.yaml")
    renamed = store.save_agent("other", RULES, None)
    assert len({first.id, edited.id, renamed.id}) == 3
    assert renamed.rules_path is None
    assert store.get_agent(edited.id) == edited


def test_get_agent_missing(store: SqlStore) -> None:
    with pytest.raises(AgentNotFound, match="no agent with id 999"):
        store.get_agent(999)


# --- runs ---------------------------------------------------------------------------------


def test_a_created_run_is_running_under_its_first_lease(store: SqlStore) -> None:
    run_id = new_run(store, new_run_id(), options={"max_steps": 5}, position={"state": "s0"})
    run = store.get_run(run_id)
    assert run.status is RunStatus.RUNNING
    assert (run.agent_name, run.model, run.input) == ("journal", "scripted:x", "go")
    assert run.options == {"max_steps": 5} and run.position == {"state": "s0"}
    assert (run.steps_count, run.input_tokens, run.output_tokens) == (0, 0, 0)
    assert run.stop_reason is None and run.error is None and run.finished_at is None
    assert run.owner == OWNER and run.lease_expires_at is not None
    assert len(run_id) == 32 and int(run_id, 16) >= 0
    assert [m.content for m in store.load_run(run_id).messages] == [{"role": "user", "text": "go"}]


def test_creating_a_run_checks_agent_id_and_model(store: SqlStore) -> None:
    agent = store.save_agent("journal", RULES)

    def created(**fields: object) -> RunCreated:
        values: dict[str, object] = {
            "agent_id": agent.id,
            "rules_hash": agent.rules_hash,
            "model": "m:x",
            "input": "",
            "options": {},
        }
        values.update(fields)
        return RunCreated.model_validate(values)

    with pytest.raises(AgentNotFound):
        append(store, "r1", created(agent_id=12345))
    append(store, "replay-1", created())
    with pytest.raises(StoreConflict, match="already exists"):
        append(store, "replay-1", created())
    with pytest.raises(InvalidValue, match="run id"):
        append(store, "Has Spaces", created())
    with pytest.raises(InvalidValue, match="model"):
        append(store, "r2", created(model=" "))
    assert [r.id for r in store.list_runs()] == ["replay-1"]


def test_pause_resume_stop_move_the_header(store: SqlStore) -> None:
    run_id = new_run(store)
    append(store, run_id, committed(0, input_tokens=100, output_tokens=20))
    running = store.get_run(run_id)  # a running run's counters are folded from its journal
    assert (running.steps_count, running.input_tokens, running.output_tokens) == (1, 100, 20)
    assert running.position == {"state": "s1"}

    append(store, run_id, paused(1), release=True)
    waiting = store.list_runs()[0]  # what `runs list` shows comes from the header
    assert waiting.status is RunStatus.AWAITING_APPROVAL and waiting.finished_at is None
    assert waiting.stop_reason == "awaiting_approval" and waiting.owner is None
    assert waiting.steps_count == 1 and waiting.position == {"state": "s1"}

    store.claim_run(run_id, OWNER)
    append(store, run_id, Resumed(previous=RunStatus.AWAITING_APPROVAL, by=OWNER))
    resumed = store.get_run(run_id)
    assert resumed.status is RunStatus.RUNNING and resumed.stop_reason is None
    with pytest.raises(RunStateConflict, match="is 'running', expected 'awaiting_approval'"):
        append(store, run_id, Resumed(previous=RunStatus.AWAITING_APPROVAL))

    append(store, run_id, committed(1, input_tokens=5), stopped(2), release=True)
    finished = store.list_runs()[0]
    assert finished.status is RunStatus.FINISHED and finished.status.is_terminal
    assert finished.stop_reason == "end_turn" and finished.owner is None
    assert finished.finished_at is not None and finished.finished_at.tzinfo is not None
    assert finished.steps_count == 2 and finished.position == {"state": "s2"}
    assert store.load_run(run_id).run.input_tokens == 105


def test_a_failed_run_keeps_its_error(store: SqlStore) -> None:
    run_id = new_run(store)
    append(store, run_id, stopped(0, "failed", stop_reason="error", error="boom"))
    failed = store.get_run(run_id)
    assert (failed.status, failed.error, failed.stop_reason) == (RunStatus.FAILED, "boom", "error")
    assert failed.finished_at is not None


def test_json_values_round_trip(store: SqlStore) -> None:
    payload = {"état": "naïve ✓", "nested": [1, 2.5, None, True, {"k": []}], "n": 10**12}
    run_id = new_run(store, position=payload)
    append(
        store,
        run_id,
        committed(0, position_after=payload, reply={"role": "assistant", "x": payload}),
    )
    snapshot = store.load_run(run_id)
    assert snapshot.run.position == payload
    assert snapshot.steps[0].position_after == payload
    assert snapshot.messages[1].content["x"] == payload


# --- the journal read back ----------------------------------------------------------------


def test_steps_calls_and_messages_fold_in_order(store: SqlStore) -> None:
    run_id = new_run(store)
    reply = {"role": "assistant", "tool_calls": [{"id": "a"}, {"id": "b"}]}
    append(store, run_id, started(0, opened("c0", 0), reply=reply))
    append(
        store,
        run_id,
        committed(
            0,
            done("c0", "charged"),
            opened("c1", 0, 1, tool="lookup", side_effects=False),
            done("c1", {"balance": 3}),
            reply=reply,
            messages=[{"role": "tool", "text": "charged"}, {"role": "tool", "text": "3"}],
        ),
    )
    snapshot = store.load_run(run_id)
    (first,) = snapshot.steps
    assert first.reply == reply and first.finished_at is not None
    assert [(m.seq, m.role, m.step_seq) for m in snapshot.messages] == [
        (0, "user", None),
        (1, "assistant", 0),  # recorded once, by the mid-step event
        (2, "tool", 0),
        (3, "tool", 0),
    ]
    charge, lookup = snapshot.calls
    assert (charge.call_id, charge.status, charge.result, charge.side_effects) == (
        "c0",
        "finished",
        "charged",
        True,
    )
    assert charge.started_at < charge.finished_at  # started mid-step, finished at the commit
    assert (lookup.batch_index, lookup.tool, lookup.result) == (1, "lookup", {"balance": 3})
    assert snapshot.pending_calls == ()


def test_a_reply_not_committed_is_the_pending_step(store: SqlStore) -> None:
    run_id = new_run(store)
    append(store, run_id, committed(0))
    reply = {"role": "assistant", "text": "step 1"}
    append(store, run_id, started(1, opened("c1", 1), reply=reply))
    snapshot = store.load_run(run_id)
    assert snapshot.run.steps_count == 1
    assert snapshot.messages[-1].content == reply and snapshot.messages[-1].step_seq == 1
    (pending,) = snapshot.pending_calls
    assert (pending.call_id, pending.status, pending.finished_at) == ("c1", "started", None)


def test_records_are_detached_and_frozen(store_url: str) -> None:
    from engine.store import open_store

    with open_store(store_url) as store:
        run_id = new_run(store, options={"a": [1]})
        snapshot = store.load_run(run_id)
    # Store closed: every field is already loaded, nothing lazy is left to fetch.
    assert snapshot.run.options == {"a": [1]}
    assert snapshot.agent.rules_text == RULES
    with pytest.raises(ValidationError):
        snapshot.run.status = RunStatus.FAILED  # type: ignore[misc]


# --- listing and lookup -------------------------------------------------------------------


def test_list_runs_filters_and_orders(store: SqlStore) -> None:
    ids = [new_run(store, f"r{i}") for i in range(3)]
    billing = new_run(store, "billing-run", agent="billing")
    append(store, ids[0], stopped(0), release=True)
    append(store, ids[1], paused(0), release=True)

    assert [r.id for r in store.list_runs()] == [billing, ids[2], ids[1], ids[0]]
    assert [r.id for r in store.list_runs(limit=2)] == [billing, ids[2]]
    assert [r.id for r in store.list_runs(status="running")] == [billing, ids[2]]
    assert [r.id for r in store.list_runs(status=["finished", RunStatus.AWAITING_APPROVAL])] == [
        ids[1],
        ids[0],
    ]
    assert [r.id for r in store.list_runs(agent="journal", status="running")] == [ids[2]]
    assert [r.agent_name for r in store.list_runs(agent="billing")] == ["billing"]
    assert store.list_runs(agent="nobody") == []
    with pytest.raises(InvalidValue, match="limit"):
        store.list_runs(limit=0)
    with pytest.raises(InvalidValue, match="unknown run status 'finito'; expected one of"):
        store.list_runs(status="finito")


def test_find_run_by_prefix(store: SqlStore) -> None:
    for run_id in ("abc1", "abc2", "abd", "x_1", "xy"):
        new_run(store, run_id)
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


def test_find_run_exact_id_wins_and_lists_few_candidates(store: SqlStore) -> None:
    for run_id in ("run", "run-1", "run-2", "run-3", "run-4", "run-5", "run-6"):
        new_run(store, run_id)
    assert store.find_run("run").id == "run"
    with pytest.raises(AmbiguousRunId) as caught:
        store.find_run("run-")
    assert caught.value.candidates == ("run-1", "run-2", "run-3", "run-4", "run-5")
    assert str(caught.value).endswith("run-5, ...); type more characters")


def test_generated_ids_have_short_unique_prefixes(store: SqlStore) -> None:
    run_id = new_run(store, new_run_id())
    assert store.find_run(run_id[:8]).id == run_id
    assert store.find_run(run_id.upper()).id == run_id


def test_missing_runs(store: SqlStore) -> None:
    for call in (store.get_run, store.load_run):
        with pytest.raises(RunNotFound, match="no run with id 'ghost'"):
            call("ghost")
    with pytest.raises(LookupError):  # the not-found errors are also LookupErrors
        store.get_run("ghost")
