"""Answer-only positions (issue 10, section 2): no tool allowed, none forced.

A "search once, then answer" agent (`max_calls: 1` on its only tool) must not stop as a dead
end after its search: the run asks the model for its final answer with no tool offered, and
the reply ends the run (`end_turn`). With a required-before-exit tool pending, the same
position is a dead end. Driven through the real SDK clients over a mock transport.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from engine.machine import StopReason
from engine.providers.anthropic import AnthropicProvider
from engine.providers.openai import OpenAIProvider
from engine.providers.scripted import ScriptedProvider
from engine.runtime import Runner
from tests.providers._provider_fakes import (
    FakeAPI,
    an_message,
    an_text,
    an_tool,
    anthropic_http_lib,
    oa_completion,
)
from tests.runtime._helpers import make_agent

SEARCH_ONCE = """\
version: 1
agent: search-once
tools: [search]
rules:
  - max_calls: 1
    tools: search
"""
CALLS: list[str] = []


def search(q: str) -> str:
    """Search the web."""
    CALLS.append(f"search:{q}")
    return f"results for {q}"


def research(topic: str) -> str:
    """Research a topic."""
    CALLS.append("research")
    return "notes"


def publish() -> str:
    """Publish."""
    CALLS.append("publish")
    return "published"


def log() -> str:
    """Log the run."""
    CALLS.append("log")
    return "logged"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    CALLS.clear()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
    for var in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path_factory.mktemp("anthropic-config")))


def run(agent: Any, provider: Any, **kwargs: Any) -> Any:
    return asyncio.run(Runner(agent, provider, **kwargs).run("What is toolfsm?"))


@pytest.mark.parametrize("gating", ["allowed_tools", "filter"])
def test_openai_search_once_then_answer_ends_the_run(gating: str) -> None:
    api = FakeAPI(
        oa_completion(None, [("c1", "search", json.dumps({"q": "toolfsm"}))]),
        oa_completion("toolfsm compiles tool rules."),
    )
    agent = make_agent(SEARCH_ONCE, search)
    result = run(agent, OpenAIProvider("gpt-test", http_client=api.client(), gating=gating))  # type: ignore[arg-type]

    assert result.stop_reason is StopReason.END_TURN
    assert result.text == "toolfsm compiles tool rules."
    assert CALLS == ["search:toolfsm"]
    first, answer = api.bodies
    assert "tools" in first
    if gating == "allowed_tools":
        assert answer["tools"] == first["tools"] and answer["tool_choice"] == "none"
    else:
        assert "tools" not in answer and "tool_choice" not in answer
    assert [m["role"] for m in answer["messages"]] == ["system", "user", "assistant", "tool"]


def test_anthropic_search_once_then_answer_ends_the_run() -> None:
    api = FakeAPI(
        an_message(an_tool("t1", "search", {"q": "toolfsm"})),
        an_message(an_text("toolfsm compiles tool rules.")),
        lib=anthropic_http_lib(),
    )
    agent = make_agent(SEARCH_ONCE, search)
    result = run(agent, AnthropicProvider("claude-test", http_client=api.client()))

    assert result.stop_reason is StopReason.END_TURN
    assert CALLS == ["search:toolfsm"]
    first, answer = api.bodies
    assert answer["tools"] == first["tools"]
    assert answer["tool_choice"] == {"type": "none"}


def test_a_call_at_an_answer_only_position_is_refused_and_the_answer_still_ends_the_run() -> None:
    agent = make_agent(SEARCH_ONCE, search)
    provider = ScriptedProvider(
        [
            {"call": "search", "args": {"q": "a"}},
            {"expect_allowed": [], "call": "search", "args": {"q": "b"}},
            {"expect_allowed": [], "expect_force": False, "text": "Done."},
        ]
    )
    result = run(agent, provider)
    assert result.stop_reason is StopReason.END_TURN
    assert CALLS == ["search:a"]  # the second search was not executed


def test_a_pending_required_tool_makes_the_answer_only_position_a_dead_end() -> None:
    agent = make_agent(
        """\
        version: 1
        agent: publish-without-log
        tools: [research, publish, log]
        rules:
          - init: research
          - after: research
            allow: [research, publish, log]
          - only_after: research
            tools: [research, publish, log]
          - required_before_exit: log
        """,
        research,
        publish,
        log,
    )
    provider = ScriptedProvider(
        [
            {"call": "research", "args": {"topic": "x"}},
            {"call": "publish", "args": {}},
        ]
    )
    result = run(agent, provider)
    assert result.stop_reason is StopReason.DEAD_END
    assert CALLS == ["research", "publish"]
