"""A fake OpenAI-compatible Chat Completions server for the durability campaign.

It answers from the history it is sent, like a real model and unlike the scripted provider:
the next reply is the plan's entry for the number of assistant turns so far, so a resumed run
gets the reply its committed history calls for. It checks every request as the real API does
(each tool message answers a call of the assistant message before it, and every call is
answered before the conversation goes on) and answers a broken history with HTTP 400. A test
can make it hold the reply to a chosen turn of a chosen run (`hold`), to kill the client
while it waits for the model.

Runs are told apart by a tag in their user message ("... [tag]").
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeModelServer", "history_problem"]

Plan = Callable[[str, int], list[tuple[str, dict[str, Any]]]]
_TAG = re.compile(r"\[([A-Za-z0-9_-]+)\]")


def history_problem(messages: list[dict[str, Any]]) -> str | None:
    """What the Chat Completions API would reject in `messages`, or None."""
    waiting: set[str] = set()  # calls of the last assistant message not answered yet
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in waiting:
                return (
                    f"messages[{index}]: a message with role 'tool' must be a response to a "
                    f"preceding message with 'tool_calls' (tool_call_id {call_id!r})"
                )
            waiting.discard(call_id)
            continue
        if waiting:
            return (
                f"messages[{index}]: an assistant message with 'tool_calls' must be followed "
                f"by tool messages responding to each 'tool_call_id' ({sorted(waiting)})"
            )
        if role == "assistant":
            waiting = {c["id"] for c in message.get("tool_calls") or ()}
    return None


class FakeModelServer:
    """The server on 127.0.0.1 (an ephemeral port), serving on a thread of its own."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._holds: dict[tuple[str, int], threading.Event] = {}
        self.held = threading.Condition(self._lock)
        self.held_now: set[tuple[str, int]] = set()
        self.rejected: list[str] = []  # the history problems it answered 400 to
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:  # (the name http.server calls)
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                status, answer = server.answer(body)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client was killed while it waited

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> FakeModelServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            for event in self._holds.values():
                event.set()
        self._http.shutdown()
        self._http.server_close()

    # -- holding a reply -----------------------------------------------------------------

    def hold(self, tag: str, turn: int) -> None:
        """Hold the reply to run `tag`'s request at `turn` (assistant turns so far)."""
        with self._lock:
            self._holds[tag, turn] = threading.Event()

    def wait_held(self, tag: str, turn: int, timeout: float) -> bool:
        """Wait until that request has arrived and is being held."""
        with self.held:
            return self.held.wait_for(lambda: (tag, turn) in self.held_now, timeout)

    def release(self, tag: str) -> None:
        """Let every held reply of `tag` go (to a client that may be dead)."""
        with self._lock:
            for key in [k for k in self._holds if k[0] == tag]:
                self._holds.pop(key).set()
                self.held_now.discard(key)

    # -- answering -----------------------------------------------------------------------

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        messages = body.get("messages") or []
        problem = history_problem(messages)
        if problem is not None:
            with self._lock:
                self.rejected.append(problem)
            return 400, {
                "error": {"message": problem, "type": "invalid_request_error", "code": None}
            }
        user = next((m for m in messages if m.get("role") == "user"), {})
        found = _TAG.search(str(user.get("content") or ""))
        tag = found.group(1) if found else "-"
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        with self._lock:
            hold = self._holds.get((tag, turn))
            if hold is not None:
                self.held_now.add((tag, turn))
                self.held.notify_all()
        if hold is not None:
            hold.wait(300)
        calls = [
            {
                "id": f"call_{turn}_{j}_{next(self._ids)}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for j, (name, args) in enumerate(self.plan(tag, turn))
        ]
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if calls:
            message["tool_calls"] = calls
        else:
            message["content"] = "done"
        return 200, {
            "id": f"chatcmpl-{turn}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if calls else "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
