"""The step loop on the scripted provider: the reference semantics, step by step."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from engine.machine import StopReason
from engine.providers.errors import ProviderAPIError
from engine.providers.scripted import ScriptedProvider
from engine.runtime import Notice, Runner, StepStarted, ToolCallStarted, Violation
from tests.runtime._helpers import make_agent, of, run_script

CALLS: list[str] = []


def fetch(item: str) -> str:
    """Fetch an item."""
    CALLS.append("fetch")
    return f"item {item}"


def check(item: str) -> str:
    """Check an item; returns ok or bad."""
    CALLS.append("check")
    return "ok" if item.startswith("good") else "bad"


def approve_item(item: str) -> str:
    CALLS.append("approve_item")
    return "approved"


def reject_item(item: str) -> str:
    CALLS.append("reject_item")
    return "rejected"


def note(text: str) -> str:
    CALLS.append("note")
    return "noted"


def search(query: str) -> list[str]:
    CALLS.append("search")
    return [query]


def finish() -> str:
    CALLS.append("finish")
    return "done"


PIPELINE = """
version: 1
agent: pipeline
tools: [fetch, check, approve_item, reject_item, note, finish]
rules:
  - init: fetch
  - after: fetch
    allow: check
    args: {check: {item: good-prefilled}}
  - after: check
    on_output: {ok: approve_item, bad: reject_item}
    strict: true
  - terminal: [approve_item, reject_item, finish]
"""
PIPELINE_TOOLS = (fetch, check, approve_item, reject_item, note, finish)


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


def c(name: str, **args):  # one scripted call
    return {"call": name, "args": args}


def test_init_child_conditional_terminal_with_prefill() -> None:
    agent = make_agent(PIPELINE, *PIPELINE_TOOLS)
    result, events = run_script(
        agent,
        [
            {**c("fetch", item="x"), "expect_forced_tool": "fetch"},
            # The model asks for item "bad-one"; the child rule's prefill replaces it.
            {**c("check", item="bad-one"), "expect_forced_tool": "check"},
            {**c("approve_item", item="x"), "expect_forced_tool": "approve_item"},
        ],
    )
    assert result.stop_reason is StopReason.TERMINAL_TOOL
    assert CALLS == ["fetch", "check", "approve_item"]
    check_call = next(e for e in of(events, ToolCallStarted) if e.tool == "check")
    assert check_call.arguments == {"item": "good-prefilled"}
    assert result.steps == 3 and result.position["node"] == "after:approve_item"


def test_violation_is_not_executed_and_names_allowed_tools_and_rule() -> None:
    agent = make_agent(PIPELINE, *PIPELINE_TOOLS)
    result, events = run_script(
        agent,
        [
            c("note", text="hi"),  # outside the init gate
            c("fetch", item="x"),
            c("check", item="x"),
            c("approve_item", item="x"),
        ],
    )
    (violation,) = of(events, Violation)
    assert violation.tool == "note"
    assert "allowed: fetch" in violation.message
    assert "agent.yaml:6:5: init rule" in violation.message
    assert "note" not in CALLS
    assert result.stop_reason is StopReason.TERMINAL_TOOL
    # The violation did not advance the machine: step 1 is still the forced init.
    starts = of(events, StepStarted)
    assert starts[1].forced_tool == "fetch"


def test_unknown_tool_and_malformed_arguments_are_rejected() -> None:
    agent = make_agent(PIPELINE, *PIPELINE_TOOLS)
    result, events = run_script(
        agent,
        [
            c("teleport"),
            {"call": "fetch", "raw_args": '{"item": '},
            c("fetch", wrong="x"),
            c("fetch", item="x"),
            c("check", item="x"),
            c("approve_item", item="x"),
        ],
    )
    messages = [v.message for v in of(events, Violation)]
    assert messages[0].startswith("unknown tool 'teleport'; allowed now: fetch")
    assert "not valid JSON" in messages[1]
    assert "item: Field required" in messages[2] and "wrong" in messages[2]
    assert CALLS == ["fetch", "check", "approve_item"]
    assert result.stop_reason is StopReason.TERMINAL_TOOL


def test_dead_end_stops_with_its_reason() -> None:
    agent = make_agent(
        """
        version: 1
        agent: dead
        tools: [check, approve_item, reject_item]
        rules:
          - after: check
            on_output: {ok: approve_item}
            strict: true
        """,
        check,
        approve_item,
        reject_item,
    )
    result, _ = run_script(agent, [c("check", item="nope")])
    assert result.stop_reason is StopReason.DEAD_END


def test_step_limit() -> None:
    agent = make_agent("version: 1\nagent: a\ntools: [note]\nrules: [{continue: note}]\n", note)
    result, _ = run_script(agent, [c("note", text=str(i)) for i in range(3)], max_steps=3)
    assert result.stop_reason is StopReason.STEP_LIMIT and result.steps == 3
    assert CALLS == ["note"] * 3


def test_required_before_exit_nags_then_ends() -> None:
    agent = make_agent(
        """
        version: 1
        agent: a
        tools: [note, finish]
        rules:
          - terminal: finish
          - required_before_exit: note
        """,
        note,
        finish,
    )
    result, events = run_script(
        agent,
        [
            {"text": "I am done."},
            c("finish"),  # terminal, but note was never called: go on
            c("note", text="log"),
            c("finish"),
        ],
    )
    nags = [n.text for n in of(events, Notice)]
    assert nags == ["You must call these tools before ending: note."] * 2
    assert result.stop_reason is StopReason.TERMINAL_TOOL
    assert CALLS == ["finish", "note", "finish"]


def test_max_calls_exhaustion_removes_the_tool() -> None:
    agent = make_agent(
        """
        version: 1
        agent: a
        tools: [search, finish]
        rules:
          - max_calls: 2
            tools: search
        """,
        search,
        finish,
    )
    result, events = run_script(
        agent,
        [
            {**c("search", query="a"), "expect_allowed": ["search", "finish"]},
            {**c("search", query="b"), "expect_allowed": ["search", "finish"]},
            {**c("search", query="c"), "expect_allowed": ["finish"]},
            {"text": "Here you go."},
        ],
    )
    assert CALLS == ["search", "search"]
    (violation,) = of(events, Violation)
    assert violation.tool == "search" and "allowed: finish" in violation.message
    assert result.stop_reason is StopReason.END_TURN and result.text == "Here you go."


def test_parallel_calls_are_checked_in_order_and_advance_one_by_one() -> None:
    agent = make_agent(PIPELINE, *PIPELINE_TOOLS)
    result, events = run_script(
        agent,
        [
            {
                "calls": [
                    c("fetch", item="x"),  # allowed (init)
                    c("check", item="x"),  # allowed after fetch; prefilled item -> "ok"
                    c("note", text="n"),  # after check=ok only approve_item is allowed
                    c("reject_item", item="x"),  # same
                    c("approve_item", item="x"),  # allowed; terminal
                ]
            },
        ],
    )
    assert CALLS == ["fetch", "check", "approve_item"]
    assert [v.tool for v in of(events, Violation)] == ["note", "reject_item"]
    assert all("allowed: approve_item" in v.message for v in of(events, Violation))
    assert result.stop_reason is StopReason.TERMINAL_TOOL and result.steps == 1


def test_terminal_call_ends_the_batch() -> None:
    agent = make_agent(PIPELINE, *PIPELINE_TOOLS)
    result, events = run_script(
        agent,
        [
            c("fetch", item="x"),
            c("check", item="x"),
            {"calls": [c("approve_item", item="x"), c("note", text="after")]},
        ],
    )
    assert CALLS == ["fetch", "check", "approve_item"]
    (violation,) = of(events, Violation)
    assert "the run ended after approve_item" in violation.message
    assert result.stop_reason is StopReason.TERMINAL_TOOL


def test_default_mode_end_turn_and_continue() -> None:
    agent = make_agent("version: 1\nagent: a\ntools: [note]\n", note)
    result, _ = run_script(agent, [c("note", text="1"), {"text": "bye"}])
    assert result.stop_reason is StopReason.END_TURN and CALLS == ["note"]


def test_heartbeat_mode() -> None:
    agent = make_agent(
        """
        version: 1
        agent: a
        tools: [note, search]
        rules:
          - continue: search
        run: {continuation: heartbeat}
        """,
        note,
        search,
    )
    result, _ = run_script(
        agent,
        [
            {"call": "search", "args": {"query": "q", "request_heartbeat": False}},  # rule
            {"call": "note", "args": {"text": "a", "request_heartbeat": True}},  # asks on
            {"call": "note", "args": {"text": "b", "request_heartbeat": False}},  # stops
        ],
    )
    assert CALLS == ["search", "note", "note"]
    assert result.stop_reason is StopReason.END_TURN and result.steps == 3


def test_forced_call_missing_is_not_an_exit() -> None:
    agent = make_agent(PIPELINE, *PIPELINE_TOOLS)
    result, events = run_script(
        agent,
        [
            {"text": "hello"},
            c("fetch", item="x"),
            c("check", item="x"),
            c("approve_item", item="x"),
        ],
    )
    assert of(events, Notice)[0].text == "A tool call is required now. Call one of: fetch."
    assert result.stop_reason is StopReason.TERMINAL_TOOL


def test_provider_error_stops_with_error_stored(store) -> None:
    class Down:
        name = "down"

        async def complete(self, request):
            raise ProviderAPIError("boom", provider="down", kind="server_error", status_code=503)

    agent = make_agent(PIPELINE, *PIPELINE_TOOLS)
    result = asyncio.run(Runner(agent, Down(), store=store).run("go"))
    assert result.stop_reason is StopReason.ERROR
    run = store.get_run(result.run_id)
    assert run.status == "failed" and run.stop_reason == "error"
    assert "HTTP 503" in run.error and "boom" in run.error


def test_every_step_is_persisted(store) -> None:
    agent = make_agent(PIPELINE, *PIPELINE_TOOLS)
    result, _ = run_script(
        agent,
        [
            {**c("fetch", item="x"), "usage": {"input_tokens": 10, "output_tokens": 2}},
            c("teleport"),
            c("check", item="x"),
            c("approve_item", item="x"),
        ],
        store=store,
    )
    snap = store.load_run(result.run_id)
    assert snap.run.status == "finished" and snap.run.stop_reason == "terminal_tool"
    assert snap.run.input_tokens == 10 and snap.run.output_tokens == 2
    assert snap.agent.rules_text.strip().startswith("version: 1")
    steps = snap.steps
    assert [s.position_after["node"] for s in steps] == [
        "after:fetch",
        "after:fetch",
        "after:check='ok'",
        "after:approve_item",
    ]
    assert steps[0].allowed == ("fetch",) and steps[0].forced_tool == "fetch"
    assert steps[1].reason == "no_call_executed" and steps[3].decision == "stop"
    calls = {c.tool: c for c in snap.calls}
    assert calls["teleport"].status == "violation" and "unknown tool" in calls["teleport"].violation
    assert calls["check"].arguments == {"item": "good-prefilled"}
    assert calls["check"].result == "ok" and calls["check"].status == "finished"
    assert calls["fetch"].side_effects
    roles = [m.role for m in snap.messages]
    assert roles == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    assert snap.pending_calls == ()


def test_a_paused_steps_tokens_are_counted_in_the_result(store) -> None:
    gated = PIPELINE.replace("  - terminal:", "  - requires_approval: fetch\n  - terminal:")
    agent = make_agent(gated, *PIPELINE_TOOLS)
    result, _ = run_script(
        agent,
        [{**c("fetch", item="x"), "usage": {"input_tokens": 10, "output_tokens": 2}}],
        store=store,
    )
    assert result.stop_reason is StopReason.AWAITING_APPROVAL and result.steps == 0
    assert (result.usage.input_tokens, result.usage.output_tokens) == (10, 2)
    # The store counts them when the step is committed (after the approval), not twice.
    assert store.get_run(result.run_id).input_tokens == 0


def test_run_without_events_records_what_the_stream_records(store) -> None:
    # run() skips the events no one reads: the result, the calls made and every stored
    # record must be those of the same run streamed.
    script = [
        {**c("fetch", item="x"), "usage": {"input_tokens": 10, "output_tokens": 2}},
        {"text": "thinking", **c("teleport")},
        c("check", item="x"),
        c("approve_item", item="x"),
    ]
    agent = make_agent(PIPELINE, *PIPELINE_TOOLS)
    streamed, _ = run_script(agent, script, store=store)
    streamed_calls = list(CALLS)
    CALLS.clear()
    ran = asyncio.run(Runner(agent, ScriptedProvider(script), store=store).run("go"))
    assert CALLS == streamed_calls == ["fetch", "check", "approve_item"]
    assert ran.run_id != streamed.run_id
    assert ran == dataclasses.replace(streamed, run_id=ran.run_id)

    def records(run_id: str) -> tuple[Any, ...]:
        snap = store.load_run(run_id)
        steps = [
            (s.seq, s.position_before, s.position_after, s.allowed, s.decision, s.reason, s.reply)
            for s in snap.steps
        ]
        calls = [(k.tool, k.status, k.arguments, k.result, k.violation) for k in snap.calls]
        messages = [(m.seq, m.role, m.content, m.step_seq) for m in snap.messages]
        return snap.run.status, snap.run.stop_reason, steps, calls, messages

    assert records(ran.run_id) == records(streamed.run_id)


def test_run_without_events_nags_like_the_stream() -> None:
    agent = make_agent(
        """
        version: 1
        agent: a
        tools: [note, finish]
        rules:
          - terminal: finish
          - required_before_exit: note
        """,
        note,
        finish,
    )
    script = [{"text": "I am done."}, c("finish"), c("note", text="log"), c("finish")]
    streamed, _ = run_script(agent, script)
    ran = asyncio.run(Runner(agent, ScriptedProvider(script)).run("go"))
    assert ran == dataclasses.replace(streamed, run_id=ran.run_id)
    assert ran.stop_reason is StopReason.TERMINAL_TOOL and ran.steps == 4
