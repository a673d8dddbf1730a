"""Fakes for provider tests: a recording mock HTTP API and reply builders for both SDKs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from engine.providers import Message, ModelRequest, ToolSpec

Responder = httpx.Response | Callable[[httpx.Request], httpx.Response] | BaseException


class FakeAPI:
    """An httpx MockTransport handler that answers from a queue and records every request.

    The real SDK clients run over it, so tests see the exact JSON bodies the SDK sends.
    """

    def __init__(self, *responses: Responder) -> None:
        self.queue: list[Responder] = list(responses)
        self.requests: list[httpx.Request] = []

    def add(self, *responses: Responder) -> None:
        self.queue.extend(responses)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.queue:
            return httpx.Response(
                599, json={"error": {"message": "FakeAPI: no response queued", "type": "test"}}
            )
        item = self.queue.pop(0)
        if isinstance(item, BaseException):
            raise item
        if callable(item):
            return item(request)
        return item

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]

    @property
    def last(self) -> dict[str, Any]:
        return self.bodies[-1]


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
) -> httpx.Response:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, name, args in calls
        ]
    return httpx.Response(
        200,
        json={
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


def oa_error(status: int, message: str, *, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        headers=headers or {},
        json={"error": {"message": message, "type": "invalid_request_error", "param": None}},
    )


# --- Anthropic Messages replies ----------------------------------------------------------------


def an_message(
    *blocks: dict[str, Any], input_tokens: int = 20, output_tokens: int = 5
) -> httpx.Response:
    has_tool = any(b["type"] == "tool_use" for b in blocks)
    return httpx.Response(
        200,
        json={
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
) -> httpx.Response:
    return httpx.Response(
        status,
        headers=headers or {},
        json={"type": "error", "error": {"type": kind, "message": message}},
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
