"""End to end: the loop drives the real `openai` / `anthropic` SDK clients over an httpx mock
transport, and every request body they send is asserted exactly (tools, tool_choice,
messages, system prompt with the rules)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from engine.machine import StopReason
from engine.providers.anthropic import AnthropicProvider
from engine.providers.openai import OpenAIProvider
from engine.runtime import Runner
from tests.providers._provider_fakes import (
    FakeAPI,
    an_error,
    an_message,
    an_text,
    an_thinking,
    an_tool,
    anthropic_http_lib,
    oa_completion,
    oa_error,
)
from tests.runtime._helpers import make_agent

LEDGER: list[str] = []


def fetch(item: str) -> str:
    """Fetch an item."""
    LEDGER.append(f"fetch:{item}")
    return f"item {item}"


def check(item: str) -> str:
    """Check an item."""
    LEDGER.append(f"check:{item}")
    return "ok" if item.startswith("good") else "bad"


def approve_item(item: str) -> str:
    """Approve an item."""
    LEDGER.append(f"approve_item:{item}")
    return "approved"


def reject_item(item: str) -> str:
    """Reject an item."""
    LEDGER.append(f"reject_item:{item}")
    return "rejected"


def search(q: str) -> list[str]:
    """Search."""
    LEDGER.append(f"search:{q}")
    return [q]


def note(text: str) -> str:
    """Write a note."""
    LEDGER.append(f"note:{text}")
    return "noted"


def finish() -> str:
    """Finish."""
    LEDGER.append("finish")
    return "done"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    LEDGER.clear()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
    for var in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path_factory.mktemp("anthropic-config")))


def an_api(*responses: Any) -> FakeAPI:
    """A fake API on the HTTP library the installed anthropic SDK uses."""
    return FakeAPI(*responses, lib=anthropic_http_lib())


def schema(**props: str) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: {"type": kind} for name, kind in props.items()},
        "required": list(props),
    }


def oa_tool(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


def allowed_tools(mode: str, *names: str) -> dict[str, Any]:
    return {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": mode,
            "tools": [{"type": "function", "function": {"name": n}} for n in names],
        },
    }


def call(cid: str, name: str, **args: Any) -> tuple[str, str, str]:
    return (cid, name, json.dumps(args))


def assistant(*calls: tuple[str, str, str], text: str | None = None) -> dict[str, Any]:
    return {
        "role": "assistant",
        # never null: compatible servers (llama.cpp) refuse it beside tool_calls
        "content": text if text is not None else "",
        "tool_calls": [
            {"id": cid, "type": "function", "function": {"name": n, "arguments": a}}
            for cid, n, a in calls
        ],
    }


def tool(cid: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": cid, "content": content}


def run(agent: Any, provider: Any, *, store: Any = None, **kwargs: Any) -> Any:
    return asyncio.run(Runner(agent, provider, store=store, **kwargs).run("Screen item x."))


PIPELINE = """\
version: 1
agent: pipeline
tools: [fetch, check, approve_item, reject_item]
rules:
  - init: fetch
  - after: fetch
    allow: check
    args: {check: {item: good-1}}
  - after: check
    on_output: {ok: approve_item, bad: reject_item}
    strict: true
  - terminal: [approve_item, reject_item]
run:
  instructions: You screen items.
"""
PIPELINE_SYSTEM = (
    "You screen items.\n\n"
    "Tool rules (the system enforces them; follow them):\n"
    "- Start by calling one of these tools: fetch\n"
    "- After using fetch, you must use one of these tools: check\n"
    "- After using check, the next tool depends on its output: if it returns 'ok', call "
    "approve_item; if it returns 'bad', call reject_item\n"
    "- approve_item, reject_item ends your response (yields control) when called"
)
PIPELINE_TOOLS = [
    oa_tool("fetch", "Fetch an item.", schema(item="string")),
    oa_tool("check", "Check an item.", schema(item="string")),
    oa_tool("approve_item", "Approve an item.", schema(item="string")),
    oa_tool("reject_item", "Reject an item.", schema(item="string")),
]


def test_openai_forced_init_child_conditional_terminal(store) -> None:
    api = FakeAPI(
        oa_completion(None, [call("c1", "fetch", item="x")]),
        oa_completion(None, [call("c2", "check", item="made-up")]),
        oa_completion("Approving.", [call("c3", "approve_item", item="x")]),
    )
    agent = make_agent(PIPELINE, fetch, check, approve_item, reject_item)
    provider = OpenAIProvider("gpt-test", http_client=api.client(), max_retries=0)
    result = run(agent, provider, store=store)
    assert result.stop_reason is StopReason.TERMINAL_TOOL
    assert LEDGER == ["fetch:x", "check:good-1", "approve_item:x"]
    user = {"role": "user", "content": "Screen item x."}
    sys = {"role": "system", "content": PIPELINE_SYSTEM}
    a1 = assistant(call("c1", "fetch", item="x"))
    a2 = assistant(call("c2", "check", item="made-up"))
    assert api.bodies == [
        {
            "model": "gpt-test",
            "messages": [sys, user],
            "tools": PIPELINE_TOOLS,
            "tool_choice": allowed_tools("required", "fetch"),
        },
        {
            "model": "gpt-test",
            "messages": [sys, user, a1, tool("c1", "item x")],
            "tools": PIPELINE_TOOLS,
            "tool_choice": allowed_tools("required", "check"),
        },
        {
            "model": "gpt-test",
            "messages": [sys, user, a1, tool("c1", "item x"), a2, tool("c2", "ok")],
            "tools": PIPELINE_TOOLS,
            "tool_choice": allowed_tools("required", "approve_item"),
        },
    ]
    snap = store.load_run(result.run_id)
    assert [s.tool_choice for s in snap.steps] == [b["tool_choice"] for b in api.bodies]
    assert snap.run.input_tokens == 33 and snap.run.output_tokens == 21


def test_openai_filter_gating_names_the_forced_tool() -> None:
    api = FakeAPI(
        oa_completion(None, [call("c1", "fetch", item="x")]),
        oa_completion(None, [call("c2", "check", item="x")]),
        oa_completion(None, [call("c3", "approve_item", item="x")]),
    )
    agent = make_agent(PIPELINE, fetch, check, approve_item, reject_item)
    provider = OpenAIProvider("gpt-test", http_client=api.client(), gating="filter")
    assert run(agent, provider).stop_reason is StopReason.TERMINAL_TOOL
    assert [b["tool_choice"] for b in api.bodies] == [
        {"type": "function", "function": {"name": n}} for n in ("fetch", "check", "approve_item")
    ]
    assert [[t["function"]["name"] for t in b["tools"]] for b in api.bodies] == [
        ["fetch"],
        ["check"],
        ["approve_item"],
    ]


RULES_B = """\
version: 1
agent: notes
tools: [search, note, finish]
rules:
  - continue: note
  - max_calls: 1
    tools: search
  - required_before_exit: note
  - terminal: finish
"""


def test_openai_continue_required_before_exit_max_calls_and_violation(store) -> None:
    api = FakeAPI(
        oa_completion(None, [call("c1", "search", q="a")]),
        oa_completion(None, [call("c2", "search", q="b")]),  # exhausted: a violation
        oa_completion(None, [call("c3", "finish")]),  # terminal, but note is required
        oa_completion(None, [call("c4", "note", text="n")]),  # continue rule
        oa_completion(None, [call("c5", "finish")]),
    )
    agent = make_agent(RULES_B, search, note, finish)
    provider = OpenAIProvider("gpt-test", http_client=api.client())
    result = run(agent, provider, store=store)
    assert result.stop_reason is StopReason.TERMINAL_TOOL
    assert LEDGER == ["search:a", "finish", "note:n", "finish"]
    bodies = api.bodies
    assert bodies[0]["messages"][0] == {
        "role": "system",
        "content": "Tool rules (the system enforces them; follow them):\n"
        "- note requires continuing your response when called\n"
        "- search: at most 1 use(s) per response\n"
        "- note must be called before ending the conversation\n"
        "- finish ends your response (yields control) when called",
    }
    assert [b["tool_choice"] for b in bodies] == [
        allowed_tools("auto", "search", "note", "finish"),
        allowed_tools("auto", "note", "finish"),
        allowed_tools("auto", "note", "finish"),
        allowed_tools("auto", "note", "finish"),
        allowed_tools("auto", "note", "finish"),
    ]
    assert all(len(b["tools"]) == 3 for b in bodies)  # the full list every time
    violation = (
        "ERROR: 'search' is not allowed now; allowed: note, finish "
        "(agent.yaml:6:5: 'search' was called 1 time(s), its limit is 1)"
    )
    assert bodies[2]["messages"][-2:] == [
        assistant(call("c2", "search", q="b")),
        tool("c2", violation),
    ]
    assert bodies[3]["messages"][-3:] == [
        assistant(call("c3", "finish")),
        tool("c3", "done"),
        {"role": "user", "content": "You must call these tools before ending: note."},
    ]
    assert bodies[4]["messages"][-2:] == [
        assistant(call("c4", "note", text="n")),
        tool("c4", "noted"),
    ]
    snap = store.load_run(result.run_id)
    assert [s.reason for s in snap.steps] == [
        "rule_continues",  # a max_calls tool continues, as in the reference
        "no_call_executed",
        "required_before_exit",
        "continue_rule",
        "terminal_tool",
    ]
    assert snap.steps[1].position_after == {
        "node": "after:search",
        "counts": {"search": 1},
        "required_called": [],
    }


def test_openai_dead_end_parallel_calls_and_step_limit() -> None:
    dead = """\
version: 1
agent: dead
tools: [check, approve_item, search]
rules:
  - after: check
    on_output: {ok: approve_item}
    strict: true
"""
    api = FakeAPI(
        oa_completion(None, [call("c1", "search", q="a"), call("c2", "check", item="bad")]),
    )
    agent = make_agent(dead, check, approve_item, search)
    result = run(agent, OpenAIProvider("gpt-test", http_client=api.client()))
    assert result.stop_reason is StopReason.DEAD_END
    assert LEDGER == ["search:a", "check:bad"]
    assert len(api.bodies) == 1 and "parallel_tool_calls" not in api.bodies[0]

    LEDGER.clear()
    loop = "version: 1\nagent: loop\ntools: [note]\nrules: [{continue: note}]\nrun: {parallel_tool_calls: false}\n"
    api = FakeAPI(*(oa_completion(None, [call(f"n{i}", "note", text=str(i))]) for i in range(2)))
    agent = make_agent(loop, note)
    result = run(agent, OpenAIProvider("gpt-test", http_client=api.client()), max_steps=2)
    assert result.stop_reason is StopReason.STEP_LIMIT and result.steps == 2
    assert [b["parallel_tool_calls"] for b in api.bodies] == [False, False]
    assert [m["role"] for m in api.bodies[1]["messages"]] == ["system", "user", "assistant", "tool"]


def test_openai_rate_limit_then_success_and_persistent_server_error(store) -> None:
    api = FakeAPI(
        oa_error(429, "Rate limit reached", headers={"retry-after-ms": "1"}),
        oa_completion("Nothing to do."),
    )
    agent = make_agent("version: 1\nagent: a\ntools: [note]\n", note)
    provider = OpenAIProvider("gpt-test", http_client=api.client(), max_retries=2)
    result = run(agent, provider, store=store)
    assert result.stop_reason is StopReason.END_TURN and result.text == "Nothing to do."
    assert len(api.bodies) == 2 and api.bodies[0] == api.bodies[1]

    api = FakeAPI(*(oa_error(500, "boom", headers={"retry-after-ms": "1"}) for _ in range(3)))
    provider = OpenAIProvider("gpt-test", http_client=api.client(), max_retries=2)
    result = run(agent, provider, store=store)
    assert result.stop_reason is StopReason.ERROR and len(api.bodies) == 3
    stored = store.get_run(result.run_id)
    assert (stored.status, stored.stop_reason) == ("failed", "error")
    assert "server_error HTTP 500" in stored.error and "boom" in stored.error


def test_anthropic_forced_choice_and_thinking_validate_and_retry() -> None:
    # Without thinking: the forced tool is named in tool_choice, only allowed tools are sent.
    api = an_api(
        an_message(an_tool("t1", "fetch", {"item": "x"})),
        an_message(an_tool("t2", "check", {"item": "x"})),
        an_message(an_text("Approve."), an_tool("t3", "approve_item", {"item": "x"})),
    )
    agent = make_agent(PIPELINE, fetch, check, approve_item, reject_item)
    provider = AnthropicProvider("claude-test", http_client=api.client(), max_tokens=1000)
    assert run(agent, provider).stop_reason is StopReason.TERMINAL_TOOL
    first = api.bodies[0]
    assert first == {
        "model": "claude-test",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Screen item x."}]}],
        "tools": [
            {
                "name": "fetch",
                "description": "Fetch an item.",
                "input_schema": schema(item="string"),
            }
        ],
        "tool_choice": {"type": "tool", "name": "fetch"},
        "system": PIPELINE_SYSTEM,
    }
    assert [b["tool_choice"] for b in api.bodies[1:]] == [
        {"type": "tool", "name": "check"},
        {"type": "tool", "name": "approve_item"},
    ]
    assert api.bodies[2]["messages"][-1] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "t2", "content": "ok"}],
    }

    # With thinking: tool_choice must be auto; a reply outside the gate is re-asked.
    LEDGER.clear()
    api = an_api(
        an_message(an_thinking("hmm", "sig1"), an_tool("t1", "check", {"item": "x"})),
        an_message(an_thinking("fetch first", "sig2"), an_tool("t2", "fetch", {"item": "x"})),
        an_message(an_thinking("now check", "sig3"), an_tool("t3", "check", {"item": "x"})),
        an_message(an_tool("t4", "approve_item", {"item": "x"})),
    )
    provider = AnthropicProvider(
        "claude-test", http_client=api.client(), max_tokens=2048, thinking=1024
    )
    result = run(agent, provider)
    assert result.stop_reason is StopReason.TERMINAL_TOOL
    assert LEDGER == ["fetch:x", "check:good-1", "approve_item:x"]
    bodies = api.bodies
    assert all(b["tool_choice"] == {"type": "auto"} for b in bodies)
    assert bodies[0]["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    # The re-ask: the violating reply, an error result for its call, and the rules restated.
    assert bodies[1]["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig1"},
                {"type": "tool_use", "id": "t1", "name": "check", "input": {"item": "x"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": "Tool 'check' is not allowed at this step; it was not run.",
                    "is_error": True,
                },
                {
                    "type": "text",
                    "text": "Your previous reply broke the tool rules: the reply calls "
                    "['check'], which is not allowed now. The only tools you may call now "
                    "are: fetch. A tool call is required.",
                },
            ],
        },
    ]
    # The next step replays the accepted reply's thinking block verbatim.
    assert bodies[2]["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "fetch first", "signature": "sig2"},
            {"type": "tool_use", "id": "t2", "name": "fetch", "input": {"item": "x"}},
        ],
    }


def test_anthropic_persistent_server_error_stops_with_error(sqlite_store) -> None:
    api = an_api(
        *(
            an_error(529, "overloaded", kind="overloaded_error", headers={"retry-after-ms": "1"})
            for _ in range(2)
        )
    )
    agent = make_agent(PIPELINE, fetch, check, approve_item, reject_item)
    provider = AnthropicProvider("claude-test", http_client=api.client(), max_retries=1)
    result = run(agent, provider, store=sqlite_store)
    assert result.stop_reason is StopReason.ERROR and len(api.bodies) == 2
    run_row = sqlite_store.get_run(result.run_id)
    assert "HTTP 529" in run_row.error and "overloaded" in run_row.error
    assert run_row.steps_count == 0 and LEDGER == []
