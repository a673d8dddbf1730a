"""OpenAIProvider against OpenAI-compatible servers (llama.cpp, vLLM, Ollama, LM Studio) that
refuse or ignore parts of the API: the real AsyncOpenAI client over a mock transport that
answers as those servers do, with exact request bodies."""

from __future__ import annotations

from typing import Any

import pytest
from _provider_fakes import (
    FETCH,
    SEARCH,
    Fail,
    FakeAPI,
    Reply,
    oa_completion,
    oa_error,
    oa_tools,
    request,
)

from engine.providers import MalformedReply, Message, ProviderAPIError, ToolCall
from engine.providers.openai import OpenAIProvider, server_quirks

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8081/v1"
ALL = ("search", "fetch", "finish")

# What llama-cpp-python's server (0.3.36) answers a tool_choice of type allowed_tools, word for
# word: FastAPI's validation errors, caught by its route handler and sent as HTTP 500.
_CHOICE = "{'type': 'allowed_tools', 'allowed_tools': {'mode': 'auto', 'tools': []}}"
LLAMA_CPP_500 = Reply(
    500,
    {
        "error": {
            "message": "3 validation errors:\n"
            "  {'type': 'literal_error', 'loc': ('body', 'tool_choice', \"literal['none','auto',"
            "'required']\"), 'msg': \"Input should be 'none', 'auto' or 'required'\", 'input': "
            f"{_CHOICE}, 'ctx': {{'expected': \"'none', 'auto' or 'required'\"}}}}\n"
            "  {'type': 'literal_error', 'loc': ('body', 'tool_choice', "
            "'ChatCompletionNamedToolChoice', 'type'), 'msg': \"Input should be 'function'\", "
            "'input': 'allowed_tools', 'ctx': {'expected': \"'function'\"}}\n"
            "  {'type': 'missing', 'loc': ('body', 'tool_choice', "
            f"'ChatCompletionNamedToolChoice', 'function'), 'msg': 'Field required', 'input': "
            f"{_CHOICE}}}\n\n"
            '  File "/venv/lib/python3.11/site-packages/llama_cpp/server/app.py", line 376, in '
            "create_chat_completion\n    POST /v1/chat/completions",
            "type": "internal_server_error",
            "param": None,
            "code": None,
        }
    },
)


def empty_500() -> Reply:
    return Reply(500, None)


def provider(api: FakeAPI, **kw: Any) -> OpenAIProvider:
    kw.setdefault("max_retries", 0)
    kw.setdefault("base_url", BASE)
    return OpenAIProvider("smollm2", http_client=api.client(), **kw)


def allowed_choice(mode: str, *names: str) -> dict[str, Any]:
    return {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": mode,
            "tools": [{"type": "function", "function": {"name": n}} for n in names],
        },
    }


async def test_a_500_validation_error_about_tool_choice_falls_back_to_filter_at_once() -> None:
    api = FakeAPI(LLAMA_CPP_500, oa_completion(calls=[("c1", "search", "{}")]))
    # Retries configured, yet the refused request is not retried: a refusal is answered at once.
    p = provider(api, max_retries=3)
    reply = await p.complete(request(("search", "fetch")))
    first, second = api.bodies
    assert first["tool_choice"] == allowed_choice("auto", "search", "fetch")
    assert first["tools"] == oa_tools(*_specs(ALL))
    assert second["tool_choice"] == "auto"
    assert second["tools"] == oa_tools(SEARCH, FETCH)
    assert len(api.requests) == 2
    assert reply.tool_calls == (ToolCall("c1", "search", "{}"),)
    assert reply.tool_choice_sent == "auto"
    assert reply.notice is not None
    assert reply.notice.startswith("the server refused tool_choice allowed_tools (HTTP 500: ")
    assert reply.notice.endswith("gating filters the tool list instead")
    assert p.gating_in_use == "filter"


async def test_the_fallback_is_remembered_per_base_url_for_the_process() -> None:
    await provider(FakeAPI(LLAMA_CPP_500, oa_completion("ok"))).complete(request())
    # A new provider (a new run) on the same server goes straight to filtering, and says so
    # on its first reply only.
    api = FakeAPI(oa_completion("one"), oa_completion("two"))
    p = provider(api)
    first = await p.complete(request())
    second = await p.complete(request())
    assert [b["tool_choice"] for b in api.bodies] == ["auto", "auto"]
    assert first.notice is not None and "refused tool_choice allowed_tools" in first.notice
    assert second.notice is None
    # Another base URL learnt nothing.
    other = FakeAPI(oa_completion("three"))
    await provider(other, base_url="http://127.0.0.1:9999/v1").complete(request())
    assert other.last["tool_choice"] == allowed_choice("auto", *ALL)


async def test_a_4xx_of_any_kind_falls_back() -> None:
    api = FakeAPI(oa_error(422, "Unprocessable Entity"), oa_completion("ok"))
    p = provider(api)
    await p.complete(request())
    assert [b["tool_choice"] for b in api.bodies] == [allowed_choice("auto", *ALL), "auto"]
    assert p.gating_in_use == "filter"


@pytest.mark.parametrize(
    "failure",
    [oa_error(500, "CUDA out of memory", headers={"retry-after-ms": "1"}), Fail("timeout")],
)
async def test_a_failure_not_about_the_request_is_retried_as_usual(failure: Any) -> None:
    api = FakeAPI(failure, failure, oa_completion("after retries"))
    p = provider(api, max_retries=2, timeout=5)
    reply = await p.complete(request())
    # 1 + max_retries attempts of the same body, as any request; nothing learnt.
    assert len(api.requests) == 3
    assert api.requests[0].content == api.requests[2].content
    assert reply.text == "after retries" and reply.notice is None
    assert p.gating_in_use == "allowed_tools"
    assert server_quirks(BASE).allowed_tools_ok


async def test_once_allowed_tools_worked_a_500_is_not_a_refusal() -> None:
    api = FakeAPI(oa_completion("fine"), LLAMA_CPP_500)
    p = provider(api)
    await p.complete(request())
    with pytest.raises(ProviderAPIError) as info:
        await p.complete(request())
    assert info.value.kind == "server_error" and len(api.requests) == 2


async def test_assistant_tool_calls_are_sent_with_empty_content_not_null() -> None:
    api = FakeAPI(oa_completion("done"))
    history = (
        Message("user", "Find item 7."),
        Message("assistant", None, tool_calls=(ToolCall("c1", "fetch", '{"id": 7}'),)),
        Message("tool", "item 7", tool_call_id="c1"),
    )
    await provider(api).complete(request(messages=history))
    assert api.last["messages"][2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "fetch", "arguments": '{"id": 7}'},
            }
        ],
    }


async def test_forcing_refused_with_an_empty_500_sends_auto_with_the_allowed_tools() -> None:
    api = FakeAPI(
        oa_completion("ok"),  # allowed_tools works...
        empty_500(),  # ...but not with mode required
        oa_completion(calls=[("c1", "fetch", '{"id": 1}')]),
        oa_completion(calls=[("c2", "search", '{"q": "x"}')]),
    )
    p = provider(api, max_retries=3)
    await p.complete(request())
    reply = await p.complete(request(("search", "fetch"), force=True))
    assert api.bodies[1]["tool_choice"] == allowed_choice("required", "search", "fetch")
    assert api.bodies[2]["tool_choice"] == "auto"
    assert api.bodies[2]["tools"] == oa_tools(SEARCH, FETCH)
    assert reply.notice is not None and "refused a forced tool_choice (HTTP 500" in reply.notice
    # Remembered: the next forced step goes straight to auto with the allowed tools.
    await p.complete(request(("search",), force=True))
    assert api.last["tool_choice"] == "auto" and api.last["tools"] == oa_tools(SEARCH)
    assert len(api.requests) == 4


async def test_forcing_ignored_narrows_forced_steps_to_the_allowed_tools() -> None:
    api = FakeAPI(
        oa_completion("I would rather talk."),  # forced, answered without a call
        oa_completion(calls=[("c1", "fetch", '{"id": 1}')]),
        oa_completion("unforced"),
    )
    p = provider(api)
    ignored = await p.complete(request(("fetch", "search"), force=True))
    assert api.bodies[0]["tool_choice"] == allowed_choice("required", "fetch", "search")
    assert ignored.notice is not None
    assert "answered a forced step without a tool call" in ignored.notice
    await p.complete(request(("fetch", "search"), force=True))
    assert api.bodies[1]["tool_choice"] == "required"
    assert api.bodies[1]["tools"] == oa_tools(SEARCH, FETCH)
    # Unforced steps keep the full list (allowed_tools works on this server).
    await p.complete(request())
    assert api.last["tool_choice"] == allowed_choice("auto", *ALL)


async def test_strict_allowed_tools_mode_adapts_nothing() -> None:
    api = FakeAPI(LLAMA_CPP_500)
    with pytest.raises(ProviderAPIError):
        await provider(api, gating="allowed_tools").complete(request())
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    ("base_url", "field"),
    [
        (None, "max_completion_tokens"),
        ("https://api.openai.com/v1", "max_completion_tokens"),
        (BASE, "max_tokens"),
    ],
)
async def test_max_tokens_is_sent_in_the_field_the_server_reads(
    base_url: str | None, field: str
) -> None:
    api = FakeAPI(oa_completion("x"))
    await provider(api, base_url=base_url, max_tokens=150, gating="filter").complete(request())
    assert api.last[field] == 150
    assert {"max_tokens", "max_completion_tokens"} - {field} - set(api.last) == {
        "max_tokens",
        "max_completion_tokens",
    } - {field}


async def test_a_timeout_names_the_option_and_the_retries() -> None:
    api = FakeAPI(Fail("timeout"), Fail("timeout"))
    with pytest.raises(ProviderAPIError) as info:
        await provider(api, gating="filter", timeout=2.5, max_retries=1).complete(request())
    assert str(info.value) == (
        "[openai:smollm2] timeout: request timed out after 2.5 s (--timeout, run.timeout); "
        "gave up after 1 retry (--retries, run.retries)"
    )


async def test_exhausted_retries_name_the_option() -> None:
    api = FakeAPI(*(oa_error(503, "busy", headers={"retry-after-ms": "1"}) for _ in range(3)))
    with pytest.raises(ProviderAPIError) as info:
        await provider(api, gating="filter", max_retries=2).complete(request())
    assert str(info.value) == (
        "[openai:smollm2] server_error HTTP 503: busy; gave up after 2 retries "
        "(--retries, run.retries)"
    )


# --- malformed replies ---------------------------------------------------------------------


def completion_with(message: Any) -> Reply:
    body = oa_completion("x").body
    body["choices"][0]["message"] = message
    return Reply(200, body)


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (completion_with(None), "choices[0].message is null"),
        (
            completion_with(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "", "type": "function", "function": {"name": "", "arguments": "{}"}}
                    ],
                }
            ),
            "tool call 0 has no function name",
        ),
        (Reply(200, {"choices": []}), "the response has no choices"),
        (Reply(200, {"choices": "many"}), "unexpected shape"),
    ],
)
async def test_a_malformed_reply_is_a_malformed_reply_error_with_the_body(
    reply: Reply, says: str
) -> None:
    api = FakeAPI(reply)
    with pytest.raises(MalformedReply) as info:
        await provider(api, gating="filter").complete(request())
    assert says in str(info.value)
    assert info.value.kind == "malformed_reply" and not info.value.retryable
    assert info.value.raw.startswith("{")


async def test_a_body_that_is_not_json_is_a_malformed_reply() -> None:
    for content_type in ("text/html", "application/json"):
        with pytest.raises(MalformedReply) as info:
            await provider(_text_api(content_type), gating="filter").complete(request())
        assert info.value.raw == "<html>502 Bad Gateway</html>"


async def test_a_call_without_an_id_gets_one() -> None:
    api = FakeAPI(
        completion_with(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "", "type": "function", "function": {"name": "fetch", "arguments": "{}"}}
                ],
            }
        )
    )
    reply = await provider(api, gating="filter").complete(request())
    (call,) = reply.tool_calls
    assert call.name == "fetch" and call.id.startswith("call_") and len(call.id) == 29


def _specs(names: tuple[str, ...]) -> tuple[Any, ...]:
    from _provider_fakes import TOOLS

    return tuple(t for t in TOOLS if t.name in names)


def _text_api(content_type: str) -> FakeAPI:
    """A server answering HTTP 200 with an HTML page (a proxy in front of a dead server)."""
    import httpx

    class TextAPI(FakeAPI):
        def handler(self, request: Any) -> Any:
            self.requests.append(request)
            return httpx.Response(
                200,
                headers={"content-type": content_type},
                content=b"<html>502 Bad Gateway</html>",
            )

    return TextAPI()
