"""AnthropicProvider over the real AsyncAnthropic client and a mock transport: exact bodies."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from _provider_fakes import (
    FETCH,
    FINISH,
    SEARCH,
    TOOLS,
    Fail,
    Reply,
    an_error,
    an_message,
    an_text,
    an_thinking,
    an_tool,
    an_tools,
    anthropic_http_lib,
    request,
)
from _provider_fakes import (
    FakeAPI as _FakeAPI,
)

from engine.providers import (
    MalformedReply,
    Message,
    ProviderAPIError,
    ProviderError,
    ToolCall,
    Usage,
)
from engine.providers.anthropic import AnthropicProvider

pytestmark = pytest.mark.anyio

USER = {"role": "user", "content": [{"type": "text", "text": "Find item 7."}]}


class FakeAPI(_FakeAPI):
    """FakeAPI on the HTTP library the anthropic SDK requires."""

    def __init__(self, *responses: Any) -> None:
        super().__init__(*responses, lib=anthropic_http_lib())


def provider(api: FakeAPI, **kw: object) -> AnthropicProvider:
    kw.setdefault("max_retries", 0)
    return AnthropicProvider("claude-test", http_client=api.client(), **kw)  # type: ignore[arg-type]


async def test_unforced_step_sends_allowed_tools_only_and_auto() -> None:
    api = FakeAPI(an_message(an_text("Let me look.")))
    reply = await provider(api).complete(request(("search", "fetch")))

    assert api.last == {
        "model": "claude-test",
        "max_tokens": 4096,
        "messages": [USER],
        "tools": an_tools(SEARCH, FETCH),
        "tool_choice": {"type": "auto"},
        "system": "You are a careful agent.",
    }
    assert str(api.requests[0].url) == "https://api.anthropic.com/v1/messages"
    assert reply.text == "Let me look." and reply.tool_calls == ()
    assert reply.usage == Usage(20, 5, cache_read_tokens=2, cache_write_tokens=1)
    assert reply.tool_choice_sent == {"type": "auto"}
    assert reply.provider_state == {"content": [an_text("Let me look.")]}


async def test_forced_with_several_allowed_is_any() -> None:
    api = FakeAPI(an_message(an_tool("toolu_1", "fetch", {"id": 7})))
    reply = await provider(api).complete(request(("search", "fetch"), force=True))

    assert api.last["tool_choice"] == {"type": "any"}
    assert api.last["tools"] == an_tools(SEARCH, FETCH)
    assert reply.tool_calls == (ToolCall("toolu_1", "fetch", '{"id": 7}'),)


async def test_forced_single_names_the_tool() -> None:
    api = FakeAPI(an_message(an_tool("toolu_1", "finish", {})))
    reply = await provider(api).complete(request(("finish",), force=True))
    assert api.last["tool_choice"] == {"type": "tool", "name": "finish"}
    assert api.last["tools"] == an_tools(FINISH)
    assert reply.tool_choice_sent == {"type": "tool", "name": "finish"}


async def test_parallel_disabled_sets_disable_parallel_tool_use() -> None:
    api = FakeAPI(*(an_message(an_text("x")) for _ in range(3)))
    p = provider(api)
    await p.complete(request(parallel=False))
    assert api.last["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    await p.complete(request(("search", "fetch"), force=True, parallel=False))
    assert api.last["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    await p.complete(request(("fetch",), force=True, parallel=False))
    assert api.last["tool_choice"] == {
        "type": "tool",
        "name": "fetch",
        "disable_parallel_tool_use": True,
    }


async def test_send_all_tools_keeps_the_full_list() -> None:
    api = FakeAPI(an_message(an_tool("t1", "search", {"q": "a"})))
    await provider(api, send_all_tools=True).complete(request(("search",), force=True))
    assert api.last["tools"] == an_tools(*TOOLS)
    assert api.last["tool_choice"] == {"type": "tool", "name": "search"}


async def test_send_all_tools_validates_when_tool_choice_cannot_enforce() -> None:
    # With every tool visible and tool_choice "any", the model can pick a tool that is not
    # allowed; the provider re-asks.
    api = FakeAPI(
        an_message(an_tool("t1", "finish", {})),
        an_message(an_tool("t2", "search", {"q": "a"})),
    )
    reply = await provider(api, send_all_tools=True).complete(
        request(("search", "fetch"), force=True)
    )
    assert reply.retries == 1 and reply.tool_calls[0].name == "search"


async def test_history_mapping_merges_tool_results_and_flags_errors() -> None:
    api = FakeAPI(an_message(an_text("done")))
    history = (
        Message("user", "Find item 7."),
        Message(
            "assistant",
            "Searching.",
            tool_calls=(ToolCall("t1", "search", '{"q": "7"}'), ToolCall("t2", "bogus", "{oops")),
        ),
        Message("tool", "1 hit", tool_call_id="t1"),
        Message("tool", "unknown tool 'bogus'", tool_call_id="t2", is_error=True),
        Message("user", "Go on."),
        Message("assistant", None),
    )
    await provider(api).complete(request(messages=history))
    assert api.last["messages"] == [
        USER,
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Searching."},
                {"type": "tool_use", "id": "t1", "name": "search", "input": {"q": "7"}},
                {
                    "type": "tool_use",
                    "id": "t2",
                    "name": "bogus",
                    "input": {"_raw_arguments": "{oops"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "1 hit"},
                {
                    "type": "tool_result",
                    "tool_use_id": "t2",
                    "content": "unknown tool 'bogus'",
                    "is_error": True,
                },
                {"type": "text", "text": "Go on."},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "(no reply)"}]},
    ]


async def test_empty_system_is_omitted() -> None:
    api = FakeAPI(an_message(an_text("x")))
    await provider(api).complete(request(system=""))
    assert "system" not in api.last


# --- extended thinking ----------------------------------------------------------------------


async def test_thinking_sends_auto_and_re_asks_until_the_reply_complies() -> None:
    thinking_1 = an_thinking("I could just answer.", "sig-1")
    thinking_2 = an_thinking("A tool call is required.", "sig-2")
    api = FakeAPI(
        an_message(thinking_1, an_text("Item 7 is a lamp."), input_tokens=100, output_tokens=30),
        an_message(thinking_2, an_tool("toolu_2", "fetch", {"id": 7}), output_tokens=40),
    )
    p = provider(api, thinking=2048)
    reply = await p.complete(request(("fetch",), force=True, parallel=False))

    first, second = api.bodies
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    # Thinking refuses forced tool choice: auto is sent, every time.
    assert (
        first["tool_choice"]
        == second["tool_choice"]
        == {
            "type": "auto",
            "disable_parallel_tool_use": True,
        }
    )
    assert first["messages"] == [USER]
    assert second["messages"] == [
        USER,
        {"role": "assistant", "content": [thinking_1, an_text("Item 7 is a lamp.")]},
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "Your previous reply broke the tool rules: a tool call is required "
                    "but the reply has none. The only tools you may call now are: fetch. "
                    "A tool call is required. Make exactly one tool call.",
                }
            ],
        },
    ]
    assert reply.retries == 1
    assert reply.tool_calls == (ToolCall("toolu_2", "fetch", '{"id": 7}'),)
    assert reply.usage == Usage(120, 70, cache_read_tokens=4, cache_write_tokens=2)
    assert reply.tool_choice_sent == {"type": "auto", "disable_parallel_tool_use": True}
    assert reply.provider_state == {"content": [thinking_2, an_tool("toolu_2", "fetch", {"id": 7})]}


async def test_thinking_answers_disallowed_calls_with_error_results() -> None:
    api = FakeAPI(
        an_message(an_thinking("t", "s1"), an_tool("toolu_1", "finish", {})),
        an_message(an_thinking("t", "s2"), an_tool("toolu_2", "search", {"q": "lamp"})),
    )
    reply = await provider(api, thinking={"type": "enabled", "budget_tokens": 1024}).complete(
        request(("search", "fetch"), force=True)
    )
    correction = api.bodies[1]["messages"][-1]
    assert correction == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": "Tool 'finish' is not allowed at this step; it was not run.",
                "is_error": True,
            },
            {
                "type": "text",
                "text": "Your previous reply broke the tool rules: the reply calls ['finish'], "
                "which is not allowed now. The only tools you may call now are: search, fetch. "
                "A tool call is required.",
            },
        ],
    }
    assert reply.retries == 1 and reply.tool_calls[0].name == "search"


async def test_thinking_retries_exhausted_returns_the_last_reply() -> None:
    api = FakeAPI(*(an_message(an_thinking("no", f"s{i}"), an_text(f"no {i}")) for i in range(3)))
    reply = await provider(api, thinking=1024).complete(request(("fetch",), force=True))
    assert len(api.requests) == 3  # the first ask and max_validation_retries=2 re-asks
    assert reply.retries == 2
    assert reply.text == "no 2" and reply.tool_calls == ()
    # Each re-ask carries the whole exchange so far.
    assert len(api.bodies[2]["messages"]) == 5


async def test_thinking_unforced_text_reply_is_accepted_without_retry() -> None:
    api = FakeAPI(an_message(an_thinking("fine", "s"), an_text("All done.")))
    reply = await provider(api, thinking=1024).complete(request(("search", "finish")))
    assert reply.retries == 0 and reply.text == "All done."
    assert len(api.requests) == 1


async def test_thinking_blocks_are_replayed_verbatim() -> None:
    blocks = [
        an_thinking("Need item 7 first.", "EqQBCkYIBxgCKkD-opaque=="),
        {"type": "redacted_thinking", "data": "ENCRYPTED-blob"},
        an_text("Fetching."),
        an_tool("toolu_9", "fetch", {"id": 7}),
    ]
    api = FakeAPI(an_message(*blocks), an_message(an_text("It is a lamp.")))
    p = provider(api, thinking=1024)
    first = request(("fetch",), force=True)
    reply = await p.complete(first)
    assert reply.provider_state == {"content": blocks}
    assert reply.text == "Fetching."
    # provider_state survives a JSON round trip (the store persists it as JSON).
    stored = json.loads(json.dumps(reply.provider_state))
    reply = dataclasses.replace(reply, provider_state=stored)

    history = (
        *first.messages,
        reply.to_message(),
        Message("tool", "a lamp", tool_call_id="toolu_9"),
    )
    await p.complete(request(("finish",), messages=history))
    assert api.last["messages"] == [
        USER,
        {"role": "assistant", "content": blocks},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "a lamp"}],
        },
    ]


def test_thinking_budget_must_be_below_max_tokens() -> None:
    with pytest.raises(ProviderError, match="budget_tokens"):
        AnthropicProvider("claude-test", thinking=8000, max_tokens=4096)


# --- retries and errors -------------------------------------------------------------------------


async def test_rate_limit_is_retried_then_succeeds() -> None:
    api = FakeAPI(
        an_error(429, "Rate limited", kind="rate_limit_error", headers={"retry-after-ms": "1"}),
        an_message(an_text("ok")),
    )
    reply = await provider(api, max_retries=2).complete(request())
    assert reply.text == "ok" and len(api.requests) == 2


async def test_persistent_500_is_server_error_after_retries() -> None:
    api = FakeAPI(*(an_error(500, "internal", headers={"retry-after-ms": "1"}) for _ in range(3)))
    with pytest.raises(ProviderAPIError) as info:
        await provider(api, max_retries=2).complete(request())
    assert info.value.kind == "server_error" and info.value.status_code == 500
    assert info.value.retryable and info.value.message == (
        "internal; gave up after 2 retries (--retries, run.retries)"
    )
    assert len(api.requests) == 3


async def test_overloaded_529_is_server_error() -> None:
    api = FakeAPI(an_error(529, "Overloaded", kind="overloaded_error"))
    with pytest.raises(ProviderAPIError) as info:
        await provider(api).complete(request())
    assert info.value.kind == "server_error" and info.value.status_code == 529


async def test_timeout_is_timeout() -> None:
    api = FakeAPI(Fail("timeout"))
    with pytest.raises(ProviderError) as info:
        await provider(api, timeout=0.5).complete(request())
    assert info.value.kind == "timeout" and info.value.retryable


async def test_bad_request_is_not_retryable() -> None:
    api = FakeAPI(an_error(400, "tools.0.name: invalid", kind="invalid_request_error"))
    with pytest.raises(ProviderError) as info:
        await provider(api, max_retries=3).complete(request())
    assert info.value.kind == "bad_request" and not info.value.retryable
    assert len(api.requests) == 1


async def test_missing_credentials_is_an_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Raised when the provider is made, before any run is stored (as for OpenAI).
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    api = FakeAPI(an_message(an_text("never")))
    with pytest.raises(ProviderError) as info:
        await provider(api).complete(request())
    assert info.value.kind == "auth"
    assert "ANTHROPIC_API_KEY" in str(info.value)
    assert api.requests == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test"},
            "the message has no content list",
        ),
        (
            {"id": "msg_1", "type": "message", "role": "assistant", "content": None},
            "the message has no content list",
        ),
        (
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "", "name": "", "input": {}}],
            },
            "tool_use block 0 has no id or no name",
        ),
    ],
)
async def test_a_message_without_usable_content_is_a_malformed_reply(
    body: dict[str, object], says: str
) -> None:
    api = FakeAPI(Reply(200, body))
    with pytest.raises(MalformedReply) as info:
        await provider(api).complete(request())
    assert says in str(info.value) and info.value.kind == "malformed_reply"
    assert '"type": "message"' in info.value.raw or '"type":"message"' in info.value.raw
