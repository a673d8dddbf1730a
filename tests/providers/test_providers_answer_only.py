"""Answer-only steps (no tool allowed, none forced) over the real SDK clients: exact bodies.

At such a step the run asks the model for its final answer with no tool offered (issue 10,
section 2). Each provider must send a body its API accepts with zero callable tools: OpenAI
refuses `tools: []` and `tool_choice` / `parallel_tool_calls` without tools; Anthropic refuses
a history with tool_use / tool_result blocks and no tool definitions.
"""

from __future__ import annotations

from typing import Any

import pytest
from _provider_fakes import (
    TOOLS,
    FakeAPI,
    an_message,
    an_text,
    an_tools,
    anthropic_http_lib,
    oa_completion,
    oa_tools,
    raw_segment,
    request,
)

from engine.providers import Message, ToolCall
from engine.providers.anthropic import AnthropicProvider
from engine.providers.openai import OpenAIProvider

pytestmark = pytest.mark.anyio

CALL = ToolCall("call_1", "search", '{"q": "7"}')
HISTORY = (
    Message("user", "Find item 7."),
    Message("assistant", None, tool_calls=(CALL,)),
    Message("tool", "3 hits", tool_call_id="call_1"),
)


def openai(api: FakeAPI, **kw: Any) -> OpenAIProvider:
    return OpenAIProvider("gpt-test", http_client=api.client(), max_retries=0, **kw)


def anthropic(api: FakeAPI, **kw: Any) -> AnthropicProvider:
    return AnthropicProvider("claude-test", http_client=api.client(), max_retries=0, **kw)


@pytest.mark.parametrize("parallel", [True, False])
async def test_openai_allowed_tools_mode_keeps_the_tools_and_sends_tool_choice_none(
    parallel: bool,
) -> None:
    api = FakeAPI(oa_completion(calls=[("c0", "search", "{}")]), oa_completion("Item 7 is red."))
    provider = openai(api)
    await provider.complete(request(("search",), force=True, parallel=parallel))
    reply = await provider.complete(request((), messages=HISTORY, parallel=parallel))

    body = api.last
    assert body["tools"] == oa_tools(*TOOLS)
    assert body["tool_choice"] == "none"
    assert body.get("parallel_tool_calls", True) is parallel
    # The tool list is byte-identical to the step before: the prompt cache still applies.
    first, second = api.requests
    assert raw_segment(first.content, "tools") == raw_segment(second.content, "tools")
    assert reply.text == "Item 7 is red." and reply.tool_calls == ()
    assert reply.tool_choice_sent == "none"


async def test_openai_filter_mode_sends_no_tools_and_no_tool_options() -> None:
    api = FakeAPI(oa_completion("Item 7 is red."))
    reply = await openai(api, gating="filter").complete(
        request((), messages=HISTORY, parallel=False)
    )

    body = api.last
    assert set(body) == {"model", "messages"}
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool"]
    assert reply.text == "Item 7 is red."


@pytest.mark.parametrize(
    "options",
    [{}, {"send_all_tools": True}, {"thinking": {"type": "enabled", "budget_tokens": 1024}}],
    ids=["allowed-only", "send-all-tools", "thinking"],
)
async def test_anthropic_sends_every_tool_with_tool_choice_none(options: dict[str, Any]) -> None:
    api = FakeAPI(an_message(an_text("Item 7 is red.")), lib=anthropic_http_lib())
    reply = await anthropic(api, **options).complete(request((), messages=HISTORY, parallel=False))

    body = api.last
    assert body["tools"] == an_tools(*TOOLS)
    assert body["tool_choice"] == {"type": "none"}
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert len(api.requests) == 1  # tool_choice none is enforced by the API: no re-ask
    assert reply.text == "Item 7 is red." and reply.retries == 0
