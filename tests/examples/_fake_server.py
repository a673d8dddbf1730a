"""A model server on 127.0.0.1 for CLI tests: answers each request with a function of the
request's JSON body, records every body. The CLI in a subprocess talks to it over real HTTP
with the real SDK clients, as it would to llama.cpp, vLLM, Ollama or LM Studio."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (status, body, content type); a dict or list body is sent as JSON.
Answer = tuple[int, Any, str]
Responder = Callable[[dict[str, Any]], Answer]


class FakeServer:
    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.bodies: list[dict[str, Any]] = []
        self.url = ""

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"


@contextmanager
def serve(respond: Responder) -> Iterator[FakeServer]:
    server = FakeServer(respond)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            server.bodies.append(body)
            status, payload, content_type = server.respond(body)
            data = (
                json.dumps(payload).encode()
                if isinstance(payload, dict | list)
                else str(payload or "").encode()
            )
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def completion(
    text: str | None = None,
    calls: list[tuple[str, str, dict[str, Any]]] = (),  # type: ignore[assignment]
) -> Answer:
    """A chat completion (HTTP 200) with `text` and `calls` as (id, tool, arguments)."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(a)}}
            for cid, name, a in calls
        ]
    return (
        200,
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "smollm2",
            "choices": [
                {"index": 0, "finish_reason": "tool_calls" if calls else "stop", "message": message}
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        },
        "application/json",
    )


def llama_cpp_allowed_tools_refusal(choice: Any) -> Answer:
    """What llama-cpp-python's server (0.3.36, as run by scripts/check-real-llm.sh) answers a
    tool_choice of type allowed_tools, word for word: FastAPI's validation errors, caught by
    its route handler and sent as HTTP 500."""
    message = (
        "3 validation errors:\n"
        "  {'type': 'literal_error', 'loc': ('body', 'tool_choice', \"literal['none','auto',"
        "'required']\"), 'msg': \"Input should be 'none', 'auto' or 'required'\", 'input': "
        f"{choice!r}, 'ctx': {{'expected': \"'none', 'auto' or 'required'\"}}}}\n"
        "  {'type': 'literal_error', 'loc': ('body', 'tool_choice', "
        "'ChatCompletionNamedToolChoice', 'type'), 'msg': \"Input should be 'function'\", "
        "'input': 'allowed_tools', 'ctx': {'expected': \"'function'\"}}\n"
        "  {'type': 'missing', 'loc': ('body', 'tool_choice', 'ChatCompletionNamedToolChoice', "
        f"'function'), 'msg': 'Field required', 'input': {choice!r}}}\n\n"
        '  File "/venv/lib/python3.11/site-packages/llama_cpp/server/app.py", line 376, in '
        "create_chat_completion\n    POST /v1/chat/completions"
    )
    return (
        500,
        {
            "error": {
                "message": message,
                "type": "internal_server_error",
                "param": None,
                "code": None,
            }
        },
        "application/json",
    )


def refuses_null_content(body: dict[str, Any]) -> Answer | None:
    """llama.cpp's server refuses an assistant message with tool_calls and `content: null`."""
    for index, message in enumerate(body.get("messages", ())):
        if message.get("role") == "assistant" and message.get("content", "") is None:
            return (
                500,
                {
                    "error": {
                        "message": f"1 validation error:\n  {{'type': 'string_type', 'loc': "
                        f"('body', 'messages', {index}, 'content'), 'msg': 'Input should be a "
                        "valid string'}",
                        "type": "internal_server_error",
                    }
                },
                "application/json",
            )
    return None
