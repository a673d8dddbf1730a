"""Fakes for provider tests: a recording mock HTTP API and reply builders for both SDKs."""

from __future__ import annotations

import asyncio
import json
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from engine.providers import Message, ModelRequest, ToolSpec

try:  # anthropic 2.x and openai 3.x run on httpx2; older SDKs on httpx
    import httpx2 as _httpx2
except ImportError:  # pragma: no cover
    _httpx2 = None


def anthropic_http_lib() -> types.ModuleType:
    """The HTTP library the installed anthropic SDK accepts for `http_client`."""
    import anthropic._base_client as base

    return _httpx2 if _httpx2 is not None and hasattr(base, "httpx2") else httpx


@dataclass(frozen=True)
class Reply:
    """A canned HTTP response, built with whichever HTTP library the client uses."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fail:
    """A transport failure instead of a response."""

    kind: Literal["timeout", "connect"]


@dataclass(frozen=True)
class Hang:
    """A request the model never answers (it is still thinking when the run is cancelled or
    the process dies); `reached` is set once the request has arrived."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class Stream:
    """A streamed response (server-sent events), sent one event per body chunk.

    Each event is a JSON value, sent as `data: JSON` (with `event: TYPE` first when `named`,
    as the Messages API names each event by its "type"), or a string sent as it stands (e.g.
    `data: [DONE]`). `broken`: the connection drops after the last event (a read error)
    instead of the body ending.
    """

    events: tuple[Any, ...]
    named: bool = False
    broken: bool = False
    status: int = 200


Responder = Reply | Fail | Hang | Stream | Callable[[Any], Reply]


class FakeAPI:
    """A MockTransport handler that answers from a queue and records every request.

    The real SDK clients run over it, so tests see the exact JSON bodies the SDK sends.
    """

    def __init__(self, *responses: Responder, lib: types.ModuleType = httpx) -> None:
        self.queue: list[Responder] = list(responses)
        self.requests: list[Any] = []
        self.lib = lib

    def add(self, *responses: Responder) -> None:
        self.queue.extend(responses)

    def handler(self, request: Any) -> Any:
        self.requests.append(request)
        if not self.queue:
            item: Responder = Reply(
                599, {"error": {"message": "FakeAPI: no response queued", "type": "test"}}
            )
        else:
            item = self.queue.pop(0)
        if isinstance(item, Hang):
            return _hang(item)
        if isinstance(item, Fail):
            if item.kind == "timeout":
                raise self.lib.ReadTimeout("read timed out", request=request)
            raise self.lib.ConnectError("connection refused", request=request)
        if isinstance(item, Stream):
            return self.lib.Response(
                item.status,
                headers={"content-type": "text/event-stream"},
                content=_stream_body(item, self.lib),
            )
        if callable(item):
            item = item(request)
        return self.lib.Response(item.status, headers=item.headers, json=item.body)

    def client(self) -> Any:
        return self.lib.AsyncClient(transport=self.lib.MockTransport(self.handler))

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]

    @property
    def last(self) -> dict[str, Any]:
        return self.bodies[-1]


async def _hang(item: Hang) -> Any:
    item.reached.set()
    await asyncio.Event().wait()  # never set: only a cancellation ends the wait


def sse_event(event: Any, *, named: bool = False) -> bytes:
    """One server-sent event, as the APIs write it."""
    if isinstance(event, str):
        return f"{event}\n\n".encode()
    head = f"event: {event['type']}\n" if named else ""
    return f"{head}data: {json.dumps(event)}\n\n".encode()


async def _stream_body(item: Stream, lib: types.ModuleType) -> Any:
    for event in item.events:
        yield sse_event(event, named=item.named)
    if item.broken:
        raise lib.ReadError("connection reset by peer")


def raw_segment(content: bytes, key: str) -> bytes:
    """The exact bytes of the JSON value of a top-level key in a request body."""
    text = content.decode()
    decoder = json.JSONDecoder()
    pos = 1  # past the opening brace
    while True:
        while text[pos] in " \n\t,":
            pos += 1
        name, pos = decoder.raw_decode(text, pos)
        while text[pos] in " \n\t:":
            pos += 1
        _, end = decoder.raw_decode(text, pos)
        if name == key:
            return text[pos:end].encode()
        pos = end


# --- OpenAI Chat Completions replies ---------------------------------------------------------


def oa_completion(
    text: str | None = None,
    calls: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
    *,
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
) -> Reply:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, name, args in calls
        ]
    return Reply(
        200,
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-test",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls" if calls else "stop",
                    "message": message,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 3},
            },
        },
    )


def oa_chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> Any:
    """One chat.completion.chunk event with one choice (`delta` None: no choices)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-test",
        "choices": choices,
        **extra,
    }


def oa_usage_chunk(prompt_tokens: int = 11, completion_tokens: int = 7) -> Any:
    """The last chunk of a stream with include_usage: no choices, the usage."""
    return oa_chunk(
        None,
        usage={
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 3},
        },
    )


def oa_stream(
    *texts: str,
    calls: list[tuple[str, str, list[str]]] = (),  # type: ignore[assignment]
    usage: bool = True,
    done: bool = True,
) -> Stream:
    """The events of a streamed completion as OpenAI's API sends them: the role, each text
    piece, each call (its id and name first, then each argument fragment), the finish
    chunk, the usage chunk, `[DONE]`."""
    events: list[Any] = [oa_chunk({"role": "assistant", "content": "" if texts else None})]
    events += [oa_chunk({"content": t}) for t in texts]
    for index, (cid, name, fragments) in enumerate(calls):
        first = {"index": index, "id": cid, "type": "function"}
        events.append(
            oa_chunk({"tool_calls": [{**first, "function": {"name": name, "arguments": ""}}]})
        )
        events += [
            oa_chunk({"tool_calls": [{"index": index, "function": {"arguments": f}}]})
            for f in fragments
        ]
    events.append(oa_chunk({}, "tool_calls" if calls else "stop"))
    if usage:
        events.append(oa_usage_chunk())
    if done:
        events.append("data: [DONE]")
    return Stream(tuple(events))


def oa_error(
    status: int,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> Reply:
    return Reply(
        status,
        {"error": {"message": message, "type": "invalid_request_error", "param": param}},
        headers or {},
    )


# --- Anthropic Messages replies ----------------------------------------------------------------


def an_message(*blocks: dict[str, Any], input_tokens: int = 20, output_tokens: int = 5) -> Reply:
    has_tool = any(b["type"] == "tool_use" for b in blocks)
    return Reply(
        200,
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": list(blocks),
            "stop_reason": "tool_use" if has_tool else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_read_input_tokens": 2,
                "cache_creation_input_tokens": 1,
            },
        },
    )


def an_text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def an_tool(cid: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": cid, "name": name, "input": args}


def an_thinking(text: str, signature: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": text, "signature": signature}


def an_error(
    status: int, message: str, *, kind: str = "api_error", headers: dict[str, str] | None = None
) -> Reply:
    return Reply(
        status,
        {"type": "error", "error": {"type": kind, "message": message}},
        headers or {},
    )


# --- Requests ----------------------------------------------------------------------------------

SEARCH = ToolSpec(
    name="search",
    description="Search the catalogue.",
    parameters={"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
)
FETCH = ToolSpec(
    name="fetch",
    description="Fetch one item.",
    parameters={"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]},
)
FINISH = ToolSpec(
    name="finish",
    description="End the task.",
    parameters={"type": "object", "properties": {}},
)
TOOLS = (SEARCH, FETCH, FINISH)


def request(
    allowed: tuple[str, ...] = ("search", "fetch", "finish"),
    *,
    force: bool = False,
    forced_tool: str | None = None,
    parallel: bool = True,
    messages: tuple[Message, ...] = (Message("user", "Find item 7."),),
    system: str = "You are a careful agent.",
) -> ModelRequest:
    return ModelRequest(
        system=system,
        messages=messages,
        tools=TOOLS,
        allowed=allowed,
        force=force,
        forced_tool=forced_tool,
        parallel_tool_calls=parallel,
    )


def oa_tools(*specs: ToolSpec) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in specs
    ]


def an_tools(*specs: ToolSpec) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in specs
    ]
