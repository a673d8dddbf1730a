"""OpenAIProvider over the real AsyncOpenAI client and a mock transport: exact request bodies."""

from __future__ import annotations

import logging

import pytest
from _provider_fakes import (
    FETCH,
    FINISH,
    SEARCH,
    TOOLS,
    Fail,
    FakeAPI,
    oa_completion,
    oa_error,
    oa_tools,
    raw_segment,
    request,
)

from engine.providers import Message, ProviderAPIError, ProviderError, ToolCall, Usage
from engine.providers.openai import OpenAIProvider

pytestmark = pytest.mark.anyio

ALL = ("search", "fetch", "finish")
SYSTEM = {"role": "system", "content": "You are a careful agent."}
USER = {"role": "user", "content": "Find item 7."}


def provider(api: FakeAPI, **kw: object) -> OpenAIProvider:
    kw.setdefault("max_retries", 0)
    return OpenAIProvider("gpt-test", http_client=api.client(), **kw)  # type: ignore[arg-type]


def allowed_choice(mode: str, *names: str) -> dict[str, object]:
    return {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": mode,
            "tools": [{"type": "function", "function": {"name": n}} for n in names],
        },
    }


async def test_unforced_step_sends_full_tools_and_allowed_tools_auto() -> None:
    api = FakeAPI(oa_completion("Thinking about it."))
    reply = await provider(api).complete(request(("search", "fetch")))

    assert api.last == {
        "model": "gpt-test",
        "messages": [SYSTEM, USER],
        "tools": oa_tools(*TOOLS),
        "tool_choice": allowed_choice("auto", "search", "fetch"),
    }
    assert api.requests[0].url == "https://api.openai.com/v1/chat/completions"
    assert reply.text == "Thinking about it."
    assert reply.tool_calls == ()
    assert reply.usage == Usage(input_tokens=11, output_tokens=7, cache_read_tokens=3)
    assert reply.tool_choice_sent == allowed_choice("auto", "search", "fetch")
    assert reply.retries == 0 and reply.provider_state is None


async def test_forced_with_several_allowed_is_required_mode() -> None:
    api = FakeAPI(oa_completion(calls=[("call_a", "search", '{"q": "7"}')]))
    reply = await provider(api).complete(request(("search", "fetch"), force=True))

    assert api.last["tool_choice"] == allowed_choice("required", "search", "fetch")
    assert api.last["tools"] == oa_tools(*TOOLS)
    assert reply.tool_calls == (ToolCall("call_a", "search", '{"q": "7"}'),)


async def test_forced_single_in_allowed_tools_mode_allows_only_that_tool() -> None:
    api = FakeAPI(oa_completion(calls=[("c1", "finish", "{}")]))
    await provider(api).complete(request(("finish",), force=True, forced_tool="finish"))

    assert api.last["tool_choice"] == allowed_choice("required", "finish")
    assert api.last["tools"] == oa_tools(*TOOLS)


async def test_allowed_tools_mode_keeps_tools_bytes_identical_across_steps() -> None:
    api = FakeAPI(
        oa_completion(calls=[("c1", "search", '{"q":"x"}')]),
        oa_completion(calls=[("c2", "finish", "{}")]),
    )
    p = provider(api)
    first = request(("search",), force=True)
    reply = await p.complete(first)
    history = (
        *first.messages,
        reply.to_message(),
        Message("tool", "3 hits", tool_call_id="c1"),
    )
    await p.complete(request(("fetch", "finish"), messages=history))

    one, two = api.requests
    assert raw_segment(one.content, "tools") == raw_segment(two.content, "tools")
    b1, b2 = api.bodies
    assert b1["tool_choice"] != b2["tool_choice"]
    # The history only grows: the earlier messages are a prefix of the later ones.
    assert b2["messages"][: len(b1["messages"])] == b1["messages"]


async def test_filter_mode_sends_only_allowed_tools() -> None:
    api = FakeAPI(*(oa_completion("ok") for _ in range(3)))
    p = provider(api, gating="filter")

    await p.complete(request(("search", "finish")))
    assert api.last["tools"] == oa_tools(SEARCH, FINISH)
    assert api.last["tool_choice"] == "auto"

    await p.complete(request(("search", "finish"), force=True))
    assert api.last["tool_choice"] == "required"

    reply = await p.complete(request(("fetch",), force=True))
    assert api.last["tools"] == oa_tools(FETCH)
    assert api.last["tool_choice"] == {"type": "function", "function": {"name": "fetch"}}
    assert reply.tool_choice_sent == {"type": "function", "function": {"name": "fetch"}}


async def test_auto_mode_falls_back_to_filter_after_a_tool_choice_400(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeAPI(
        oa_error(400, "Invalid value for 'tool_choice': 'allowed_tools' is not supported."),
        oa_completion(calls=[("c1", "search", "{}")]),
        oa_completion("fine"),
    )
    p = provider(api, gating="auto")
    with caplog.at_level(logging.INFO, logger="engine.providers.openai"):
        reply = await p.complete(request(("search",), force=True))

    first, second = api.bodies
    assert first["tool_choice"] == allowed_choice("required", "search")
    assert second["tools"] == oa_tools(SEARCH)
    assert second["tool_choice"] == {"type": "function", "function": {"name": "search"}}
    assert reply.tool_choice_sent == second["tool_choice"]
    assert p.gating_in_use == "filter"
    assert "refused tool_choice allowed_tools" in caplog.text
    assert reply.notice == (
        "the server refused tool_choice allowed_tools (HTTP 400: Invalid value for "
        "'tool_choice': 'allowed_tools' is not supported.); gating filters the tool list instead"
    )

    # The switch is permanent: the next step goes straight to filter, one request.
    await p.complete(request(("search", "fetch")))
    assert len(api.requests) == 3
    assert api.last["tool_choice"] == "auto"
    assert api.last["tools"] == oa_tools(SEARCH, FETCH)


async def test_auto_mode_also_falls_back_on_the_error_param() -> None:
    api = FakeAPI(oa_error(400, "Unsupported value.", param="tool_choice"), oa_completion("fine"))
    p = provider(api, gating="auto")
    await p.complete(request())
    assert p.gating_in_use == "filter" and api.last["tool_choice"] == "auto"


async def test_allowed_tools_mode_does_not_fall_back() -> None:
    api = FakeAPI(oa_error(400, "Invalid value for 'tool_choice'.", param="tool_choice"))
    with pytest.raises(ProviderAPIError) as info:
        await provider(api, gating="allowed_tools").complete(request(force=True))
    assert info.value.kind == "bad_request" and info.value.status_code == 400
    assert info.value.message == "Invalid value for 'tool_choice'. (param: tool_choice)"
    assert not info.value.retryable
    assert len(api.requests) == 1


async def test_auto_mode_keeps_allowed_tools_when_filter_fails_the_same_way() -> None:
    # Any 4xx may be the server refusing allowed_tools: the request is tried once filtered;
    # when that fails too, the cause was not tool_choice, and nothing is learnt.
    api = FakeAPI(oa_error(400, "messages: too long"), oa_error(400, "messages: too long"))
    p = provider(api, gating="auto")
    with pytest.raises(ProviderAPIError, match="too long"):
        await p.complete(request())
    assert [b["tool_choice"] for b in api.bodies] == [allowed_choice("auto", *ALL), "auto"]
    assert p.gating_in_use == "allowed_tools"


async def test_parallel_disabled_is_sent() -> None:
    api = FakeAPI(oa_completion("x"), oa_completion("y"))
    p = provider(api)
    await p.complete(request(parallel=False))
    assert api.last["parallel_tool_calls"] is False
    await p.complete(request(parallel=True))
    assert "parallel_tool_calls" not in api.last


async def test_history_mapping_with_tool_results_and_errors() -> None:
    api = FakeAPI(oa_completion("done"))
    history = (
        Message("user", "Find item 7."),
        Message(
            "assistant",
            "Searching.",
            tool_calls=(
                ToolCall("c1", "search", '{"q": "7"}'),
                ToolCall("c2", "nonexistent", '{"q": '),  # hallucinated and malformed
            ),
        ),
        Message("tool", "1 hit", tool_call_id="c1"),
        Message("tool", "unknown tool 'nonexistent'", tool_call_id="c2", is_error=True),
        Message("assistant", None, tool_calls=(ToolCall("c3", "fetch", '{"id": 7}'),)),
        Message("tool", "item 7", tool_call_id="c3"),
        Message("assistant", "Here it is."),
        Message("user", "Thanks, finish."),
    )
    await provider(api).complete(request(messages=history))

    assert api.last["messages"] == [
        SYSTEM,
        USER,
        {
            "role": "assistant",
            "content": "Searching.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "search", "arguments": '{"q": "7"}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "nonexistent", "arguments": '{"q": '},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "1 hit"},
        {"role": "tool", "tool_call_id": "c2", "content": "ERROR: unknown tool 'nonexistent'"},
        {
            "role": "assistant",
            "content": "",  # not null: compatible servers (llama.cpp) refuse null
            "tool_calls": [
                {
                    "id": "c3",
                    "type": "function",
                    "function": {"name": "fetch", "arguments": '{"id": 7}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c3", "content": "item 7"},
        {"role": "assistant", "content": "Here it is."},
        {"role": "user", "content": "Thanks, finish."},
    ]


async def test_empty_system_prompt_is_omitted() -> None:
    api = FakeAPI(oa_completion("x"))
    await provider(api).complete(request(system=""))
    assert api.last["messages"] == [USER]


async def test_reply_keeps_parallel_malformed_and_hallucinated_calls_verbatim() -> None:
    api = FakeAPI(
        oa_completion(
            "Two at once.",
            calls=[("c1", "search", '{"q": "a"}'), ("c2", "teleport", '{"to": ')],
        )
    )
    reply = await provider(api).complete(request())
    assert reply.text == "Two at once."
    assert reply.tool_calls == (
        ToolCall("c1", "search", '{"q": "a"}'),
        ToolCall("c2", "teleport", '{"to": '),
    )


async def test_options_max_tokens_and_request_options_are_sent() -> None:
    api = FakeAPI(oa_completion("x"))
    await provider(api, max_tokens=256, request_options={"temperature": 0, "seed": 5}).complete(
        request()
    )
    assert api.last["max_completion_tokens"] == 256
    assert api.last["temperature"] == 0 and api.last["seed"] == 5


async def test_base_url_for_compatible_servers_needs_no_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    api = FakeAPI(oa_completion("local"))
    p = OpenAIProvider(
        "llama3", base_url="http://127.0.0.1:11434/v1", http_client=api.client(), max_retries=0
    )
    reply = await p.complete(request())
    assert reply.text == "local"
    assert str(api.requests[0].url) == "http://127.0.0.1:11434/v1/chat/completions"


def test_missing_key_without_base_url_is_an_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ProviderAPIError) as info:
        OpenAIProvider("gpt-test")
    assert info.value.kind == "auth" and "OPENAI_API_KEY" in str(info.value)


def test_unknown_gating_mode_is_a_config_error() -> None:
    with pytest.raises(ProviderError, match="gating"):
        OpenAIProvider("gpt-test", gating="sometimes")  # type: ignore[arg-type]


# --- retries and errors -------------------------------------------------------------------------


async def test_rate_limit_is_retried_by_the_sdk_then_succeeds() -> None:
    api = FakeAPI(
        oa_error(429, "Rate limit reached", headers={"retry-after-ms": "1"}),
        oa_completion("after the wait"),
    )
    reply = await provider(api, max_retries=2, gating="filter").complete(request())
    assert reply.text == "after the wait"
    assert [r.headers["x-stainless-retry-count"] for r in api.requests] == ["0", "1"]
    # A retry resends the identical body.
    assert api.requests[0].content == api.requests[1].content


async def test_rate_limit_exhausted_is_rate_limited() -> None:
    api = FakeAPI(*(oa_error(429, "slow down", headers={"retry-after-ms": "1"}) for _ in range(3)))
    with pytest.raises(ProviderAPIError) as info:
        await provider(api, max_retries=2).complete(request())
    assert info.value.kind == "rate_limited" and info.value.retryable
    assert info.value.status_code == 429
    assert len(api.requests) == 3


async def test_persistent_500_is_server_error_after_retries() -> None:
    api = FakeAPI(*(oa_error(500, "boom", headers={"retry-after-ms": "1"}) for _ in range(4)))
    with pytest.raises(ProviderError) as info:
        await provider(api, max_retries=3).complete(request())
    err = info.value
    assert err.kind == "server_error" and err.retryable and err.status_code == 500
    assert err.provider == "openai:gpt-test"
    assert len(api.requests) == 4
    assert isinstance(err.__cause__, Exception)


async def test_timeout_is_timeout_after_retries() -> None:
    api = FakeAPI(Fail("timeout"), Fail("timeout"))
    with pytest.raises(ProviderError) as info:
        await provider(api, max_retries=1, timeout=0.5).complete(request())
    assert info.value.kind == "timeout" and info.value.retryable
    assert len(api.requests) == 2


async def test_connection_failure_is_connection() -> None:
    api = FakeAPI(Fail("connect"))
    with pytest.raises(ProviderError) as info:
        await provider(api).complete(request())
    assert info.value.kind == "connection" and info.value.retryable


async def test_auth_failure_is_not_retryable_and_does_not_leak_the_key() -> None:
    api = FakeAPI(oa_error(401, "Incorrect API key provided."))
    with pytest.raises(ProviderError) as info:
        await provider(api, max_retries=3).complete(request())
    assert info.value.kind == "auth" and not info.value.retryable
    assert len(api.requests) == 1
    assert "sk-test-openai-key" not in str(info.value)
    assert "sk-test-openai-key" not in repr(vars(info.value))


async def test_runs_on_an_httpx2_client_too() -> None:
    httpx2 = pytest.importorskip("httpx2")
    api = FakeAPI(oa_completion("over httpx2"), lib=httpx2)
    reply = await provider(api).complete(request())
    assert reply.text == "over httpx2"
    assert api.last["tool_choice"]["type"] == "allowed_tools"
