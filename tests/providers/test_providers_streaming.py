"""Streaming (`Provider.stream`) through the real `openai` and `anthropic` SDK clients over a
mock transport serving server-sent events as each API writes them: the exact request bodies,
the deltas as they arrive, the final reply (the one `complete` gives for the same content),
and streams that break, fail or carry garbage."""

from __future__ import annotations

from typing import Any

import pytest
from _provider_fakes import (
    SEARCH,
    FakeAPI,
    Reply,
    Stream,
    an_message,
    an_text,
    an_thinking,
    an_tool,
    anthropic_http_lib,
    oa_chunk,
    oa_completion,
    oa_error,
    oa_stream,
    oa_tools,
    request,
)

from engine.providers import (
    MalformedReply,
    ModelReply,
    ProviderAPIError,
    ToolCall,
    Usage,
)
from engine.providers.anthropic import AnthropicProvider
from engine.providers.base import TextChunk, ToolCallChunk, stream_reply
from engine.providers.openai import OpenAIProvider
from engine.providers.random import RandomProvider
from engine.providers.scripted import ScriptedProvider

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8081/v1"
SYSTEM = {"role": "system", "content": "You are a careful agent."}
USER = {"role": "user", "content": "Find item 7."}


def openai(api: FakeAPI, **kw: Any) -> OpenAIProvider:
    kw.setdefault("max_retries", 0)
    return OpenAIProvider("gpt-test", http_client=api.client(), **kw)


async def collect(provider: Any, req: Any = None) -> list[Any]:
    return [item async for item in stream_reply(provider, req or request())]


def allowed_choice(*names: str) -> dict[str, Any]:
    tools = [{"type": "function", "function": {"name": n}} for n in names]
    return {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": tools}}


# --- OpenAI Chat Completions -----------------------------------------------------------------


async def test_openai_streams_text_and_call_arguments_then_the_reply_complete_gives() -> None:
    stream = oa_stream("Let me ", "look.", calls=[("call_a", "search", ['{"q"', ': "7"}'])])
    whole = oa_completion("Let me look.", [("call_a", "search", '{"q": "7"}')])
    api = FakeAPI(stream, whole)
    p = openai(api)

    items = await collect(p, request(("search", "fetch")))

    assert api.bodies[0] == {
        "model": "gpt-test",
        "messages": [SYSTEM, USER],
        "tools": oa_tools(*request().tools),
        "tool_choice": allowed_choice("search", "fetch"),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert items[:-1] == [
        TextChunk("Let me "),
        TextChunk("look."),
        ToolCallChunk(0, "call_a", "search", ""),
        ToolCallChunk(0, None, None, '{"q"'),
        ToolCallChunk(0, None, None, ': "7"}'),
    ]
    reply = items[-1]
    assert reply == ModelReply(
        text="Let me look.",
        tool_calls=(ToolCall("call_a", "search", '{"q": "7"}'),),
        usage=Usage(input_tokens=11, output_tokens=7, cache_read_tokens=3),
        tool_choice_sent=allowed_choice("search", "fetch"),
    )
    # The same content answered whole: the same reply, from the same request but `stream`.
    assert await p.complete(request(("search", "fetch"))) == reply
    assert {k: v for k, v in api.bodies[0].items() if not k.startswith("stream")} == api.bodies[1]


async def test_openai_parallel_calls_stream_by_index() -> None:
    calls = [("c1", "search", ['{"q": "a"}']), ("c2", "fetch", ['{"id"', ": 7}"])]
    api = FakeAPI(oa_stream(calls=calls))
    items = await collect(openai(api))

    assert [i for i in items[:-1] if i.id] == [
        ToolCallChunk(0, "c1", "search", ""),
        ToolCallChunk(1, "c2", "fetch", ""),
    ]
    assert items[-1].text is None
    assert items[-1].tool_calls == (
        ToolCall("c1", "search", '{"q": "a"}'),
        ToolCall("c2", "fetch", '{"id": 7}'),
    )


async def test_openai_a_stream_that_breaks_after_a_delta_is_an_error_and_not_retried() -> None:
    events = oa_stream("Half a th").events[:2]  # the role chunk, one text chunk
    api = FakeAPI(Stream(events, broken=True), oa_stream("never asked"))
    items: list[Any] = []
    with pytest.raises(ProviderAPIError) as info:
        async for item in stream_reply(openai(api, max_retries=3), request()):
            items.append(item)

    assert items == [TextChunk("Half a th")]
    assert info.value.kind == "connection"
    assert "the reply broke off after 1 streamed piece(s)" in info.value.message
    assert "not asked for again" in info.value.message
    assert len(api.requests) == 1


async def test_openai_a_stream_that_ends_without_finishing_is_an_error() -> None:
    api = FakeAPI(Stream(oa_stream("Half").events[:2]))  # the body ends: no finish chunk
    with pytest.raises(ProviderAPIError) as info:
        await collect(openai(api, max_retries=2))

    assert "broke off" in info.value.message
    assert "no finish_reason" in info.value.message
    assert len(api.requests) == 1


async def test_openai_a_stream_that_breaks_before_any_delta_is_sent_again() -> None:
    role_only = oa_stream().events[:1]
    api = FakeAPI(Stream(role_only, broken=True), oa_stream("Fine."))
    items = await collect(openai(api, max_retries=1))

    assert items[:-1] == [TextChunk("Fine.")]
    assert items[-1].text == "Fine."
    assert len(api.requests) == 2
    assert api.bodies[0] == api.bodies[1]


async def test_openai_a_stream_broken_before_a_delta_is_retried_max_retries_times() -> None:
    role_only = oa_stream().events[:1]
    api = FakeAPI(*[Stream(role_only, broken=True)] * 3)
    with pytest.raises(ProviderAPIError) as info:
        await collect(openai(api, max_retries=2))

    assert info.value.kind == "connection"
    assert "broke off" not in info.value.message
    assert len(api.requests) == 3


async def test_openai_an_http_error_before_the_stream_is_retried_by_the_sdk() -> None:
    api = FakeAPI(oa_error(429, "slow down", headers={"retry-after-ms": "1"}), oa_stream("Ok."))
    items = await collect(openai(api, max_retries=1))

    assert items[-1].text == "Ok."
    assert len(api.requests) == 2


async def test_openai_an_error_event_mid_stream_is_a_server_error() -> None:
    events = (*oa_stream("Par").events[:2], {"error": {"message": "model overloaded"}})
    api = FakeAPI(Stream(events))
    with pytest.raises(ProviderAPIError) as info:
        await collect(openai(api))

    assert info.value.kind == "server_error"
    assert "the server reported an error in the stream: model overloaded" in info.value.message
    assert "broke off after 1" in info.value.message


async def test_openai_a_chunk_that_is_not_json_is_a_malformed_reply_with_what_came() -> None:
    events = (*oa_stream("Par").events[:2], "data: {not json")
    api = FakeAPI(Stream(events))
    with pytest.raises(MalformedReply) as info:
        await collect(openai(api, max_retries=2))

    assert "a stream event is not JSON" in info.value.message
    assert info.value.raw.count("data: ") == 2 and '"Par"' in info.value.raw
    assert info.value.tool_choice_sent == allowed_choice("search", "fetch", "finish")
    assert len(api.requests) == 1  # a malformed reply is not asked for again


async def test_openai_a_streamed_call_without_a_name_is_a_malformed_reply() -> None:
    nameless = oa_chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"arguments": "{}"}}]})
    api = FakeAPI(Stream((nameless, oa_chunk({}, "tool_calls"), "data: [DONE]")))
    with pytest.raises(MalformedReply) as info:
        await collect(openai(api))

    assert info.value.message == "malformed reply: tool call 0 has no function name"


async def test_openai_chunks_of_the_wrong_shape_are_a_malformed_reply() -> None:
    api = FakeAPI(
        Stream(({"choices": "nope"},)), Stream(({"choices": [{"delta": {"content": 3}}]},))
    )
    with pytest.raises(MalformedReply) as shape:
        await collect(openai(api))
    with pytest.raises(MalformedReply) as text:
        await collect(openai(api))

    assert "a stream chunk has an unexpected shape" in shape.value.message
    assert text.value.message == "malformed reply: the message content is not text"


async def test_openai_a_server_that_does_not_stream_is_read_whole() -> None:
    api = FakeAPI(oa_completion("I do not stream.", [("c1", "search", '{"q": "7"}')]))
    items = await collect(openai(api))

    assert api.last["stream"] is True
    assert items[:-1] == [
        TextChunk("I do not stream."),
        ToolCallChunk(0, "c1", "search", '{"q": "7"}'),
    ]
    assert items[-1].usage == Usage(input_tokens=11, output_tokens=7, cache_read_tokens=3)


async def test_openai_a_stream_without_events_is_a_malformed_reply() -> None:
    api = FakeAPI(Stream(()), Reply(200, "not json at all"))
    with pytest.raises(MalformedReply) as empty:
        await collect(openai(api))
    with pytest.raises(MalformedReply) as garbage:
        await collect(openai(api))

    assert "the server sent no stream events" in empty.value.message
    assert garbage.value.message == "malformed reply: the body is not a chat completion"
    assert garbage.value.raw == '"not json at all"'


async def test_openai_streaming_falls_back_from_allowed_tools_as_complete_does() -> None:
    refusal = oa_error(400, "tool_choice: unknown type allowed_tools", param="tool_choice")
    api = FakeAPI(refusal, oa_stream("Filtered."), oa_stream("Again."))
    p = openai(api, base_url=BASE, max_retries=2)

    items = await collect(p, request(("search",)))
    again = await collect(p, request(("search",)))

    assert [b["tool_choice"] for b in api.bodies] == [allowed_choice("search"), "auto", "auto"]
    assert api.bodies[1]["tools"] == oa_tools(SEARCH)
    assert items[-1].text == "Filtered."
    assert "gating filters the tool list instead" in (items[-1].notice or "")
    assert again[-1].notice is None


async def test_openai_a_server_refusing_stream_options_streams_without_it() -> None:
    refusal = oa_error(400, "Unrecognized request argument supplied: stream_options")
    api = FakeAPI(refusal, oa_stream("No counts.", usage=False), oa_stream("Still.", usage=False))
    p = openai(api, base_url=BASE, gating="filter")

    first = await collect(p)
    second = await collect(p)

    assert "stream_options" in api.bodies[0]
    assert "stream_options" not in api.bodies[1] and "stream_options" not in api.bodies[2]
    assert api.bodies[1]["stream"] is True
    assert first[-1].text == "No counts." and first[-1].usage == Usage()
    assert "the server refused stream_options (HTTP 400: Unrecognized" in (first[-1].notice or "")
    assert second[-1].notice is None


async def test_openai_an_answer_only_step_streams_its_answer() -> None:
    api = FakeAPI(oa_stream("The answer ", "is 7."))
    items = await collect(openai(api), request(()))

    assert api.last["tool_choice"] == "none"
    assert items[:-1] == [TextChunk("The answer "), TextChunk("is 7.")]
    assert items[-1].text == "The answer is 7."


# --- Anthropic Messages ----------------------------------------------------------------------


class AnthropicAPI(FakeAPI):
    def __init__(self, *responses: Any) -> None:
        super().__init__(*responses, lib=anthropic_http_lib())


def anthropic(api: FakeAPI, **kw: Any) -> AnthropicProvider:
    kw.setdefault("max_retries", 0)
    return AnthropicProvider("claude-test", http_client=api.client(), **kw)


MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 20,
            "output_tokens": 1,
            "cache_read_input_tokens": 2,
            "cache_creation_input_tokens": 1,
        },
    },
}


def an_events(*texts: str, tool: tuple[str, str, list[str]] | None = None) -> list[Any]:
    """The events of a streamed message as the Messages API sends them (with a ping)."""
    events: list[Any] = [MESSAGE_START]
    if texts:
        events.append({"type": "content_block_start", "index": 0, "content_block": an_text("")})
        events.append({"type": "ping"})
        events += [
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
            for t in texts
        ]
        events.append({"type": "content_block_stop", "index": 0})
    if tool is not None:
        index = 1 if texts else 0
        cid, name, fragments = tool
        block = {"type": "tool_use", "id": cid, "name": name, "input": {}}
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        events += [
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": f},
            }
            for f in ["", *fragments]
        ]
        events.append({"type": "content_block_stop", "index": index})
    stop = "tool_use" if tool else "end_turn"
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": 5},
        }
    )
    events.append({"type": "message_stop"})
    return events


def an_stream(*events: Any, broken: bool = False) -> Stream:
    return Stream(tuple(events), named=True, broken=broken)


async def test_anthropic_streams_text_and_input_json_then_the_reply_complete_gives() -> None:
    events = an_events("Let me ", "look.", tool=("tu_1", "search", ['{"q": ', '"7"}']))
    whole = an_message(an_text("Let me look."), an_tool("tu_1", "search", {"q": "7"}))
    api = AnthropicAPI(an_stream(*events), whole)
    p = anthropic(api)

    items = await collect(p, request(("search", "fetch")))

    assert api.bodies[0]["stream"] is True
    assert {k: v for k, v in api.bodies[0].items() if k != "stream"} == {
        "model": "claude-test",
        "max_tokens": 4096,
        "system": "You are a careful agent.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Find item 7."}]}],
        "tools": [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request().tools[:2]
        ],
        "tool_choice": {"type": "auto"},
    }
    assert items[:-1] == [
        TextChunk("Let me "),
        TextChunk("look."),
        ToolCallChunk(0, "tu_1", "search", ""),
        ToolCallChunk(0, None, None, '{"q": '),
        ToolCallChunk(0, None, None, '"7"}'),
    ]
    reply = items[-1]
    assert reply == ModelReply(
        text="Let me look.",
        tool_calls=(ToolCall("tu_1", "search", '{"q": "7"}'),),
        usage=Usage(input_tokens=20, output_tokens=5, cache_read_tokens=2, cache_write_tokens=1),
        tool_choice_sent={"type": "auto"},
        provider_state={
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "tu_1", "name": "search", "input": {"q": "7"}},
            ]
        },
    )
    assert await p.complete(request(("search", "fetch"))) == reply
    assert "stream" not in api.bodies[1]


async def test_anthropic_a_stream_that_breaks_after_a_delta_is_an_error_not_retried() -> None:
    events = an_events("Half a th")[:4]  # start, block start, ping, one text delta
    api = AnthropicAPI(an_stream(*events, broken=True), an_stream(*an_events("never")))
    items: list[Any] = []
    with pytest.raises(ProviderAPIError) as info:
        async for item in stream_reply(anthropic(api, max_retries=3), request()):
            items.append(item)

    assert items == [TextChunk("Half a th")]
    assert info.value.kind == "connection"
    assert "the reply broke off after 1 streamed piece(s)" in info.value.message
    assert len(api.requests) == 1


async def test_anthropic_a_stream_cut_before_any_delta_is_sent_again() -> None:
    api = AnthropicAPI(an_stream(MESSAGE_START), an_stream(*an_events("Fine.")))
    items = await collect(anthropic(api, max_retries=1))

    assert items[-1].text == "Fine."
    assert len(api.requests) == 2


async def test_anthropic_an_error_event_mid_stream_keeps_its_kind() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    api = AnthropicAPI(an_stream(*an_events("Par")[:4], error))
    with pytest.raises(ProviderAPIError) as info:
        await collect(anthropic(api))

    assert info.value.kind == "server_error"
    assert (
        "the server reported an error in the stream: overloaded_error: Overloaded"
        in info.value.message
    )


async def test_anthropic_tool_input_that_is_not_json_is_a_malformed_reply() -> None:
    events = an_events(tool=("tu_1", "search", ['{"q": ']))  # cut off, yet the message stops
    api = AnthropicAPI(an_stream(*events))
    with pytest.raises(MalformedReply) as info:
        await collect(anthropic(api))

    assert "content block 0: the tool input is not JSON" in info.value.message
    assert "event: message_start" in info.value.raw and "input_json_delta" in info.value.raw


async def test_anthropic_events_that_cannot_be_read_are_a_malformed_reply() -> None:
    text_delta = {"type": "content_block_delta", "index": 0, "delta": an_events("x")[3]["delta"]}
    api = AnthropicAPI(
        an_stream(text_delta, *an_events("x")),  # a delta before message_start
        an_stream(MESSAGE_START, {**text_delta, "index": 5}),  # a delta of no block
        Stream(("event: message_start\ndata: {oops",)),  # not JSON
    )
    errors = []
    for _ in range(3):
        with pytest.raises(MalformedReply) as info:
            await collect(anthropic(api, max_retries=2))
        errors.append(info.value)

    assert errors[0].message == (
        "malformed reply: a content_block_delta event came before message_start"
    )
    assert "a stream event cannot be read (list index out of range)" in errors[1].message
    assert "a stream event cannot be read (Expecting property name" in errors[2].message
    assert "event: message_start" in errors[1].raw
    assert len(api.requests) == 3  # none asked for again


async def test_anthropic_with_thinking_a_reply_is_validated_before_it_is_handed_on() -> None:
    # The first reply breaks the gating (no call when one is forced): it is re-asked, and
    # only the reply that stands is handed on, whole.
    api = AnthropicAPI(
        an_message(an_thinking("hmm", "sig"), an_text("No call.")),
        an_message(an_thinking("ok", "sig2"), an_tool("tu_2", "search", {"q": "7"})),
    )
    items = await collect(anthropic(api, thinking=1024), request(("search",), force=True))

    assert all("stream" not in b for b in api.bodies)
    assert items[:-1] == [ToolCallChunk(0, "tu_2", "search", '{"q": "7"}')]
    assert items[-1].retries == 1


# --- Providers without streaming -------------------------------------------------------------


async def test_a_provider_without_streaming_hands_its_reply_on_in_one_delta_per_part() -> None:
    items = await collect(RandomProvider(3, text_probability=0.0), request(("fetch",), force=True))

    (call,) = items[-1].tool_calls
    assert items[:-1] == [ToolCallChunk(0, call.id, "fetch", call.arguments)]


async def test_the_scripted_provider_streams_words_then_calls() -> None:
    script = ScriptedProvider([{"text": "Looking it  up.\n", "call": "search", "args": {"q": "7"}}])
    items = await collect(script)

    assert items[:-1] == [
        TextChunk("Looking "),
        TextChunk("it  "),
        TextChunk("up.\n"),
        ToolCallChunk(0, "call_1", "search", ""),
        ToolCallChunk(0, None, None, '{"q": "7"}'),
    ]
    assert items[-1] == ModelReply(
        text="Looking it  up.\n", tool_calls=(ToolCall("call_1", "search", '{"q": "7"}'),)
    )
