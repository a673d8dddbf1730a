"""An OpenAI-compatible Chat Completions server on 127.0.0.1, in a thread of the test process.

A `toolfsm` subprocess talks to it with the real `openai` SDK (`--model openai:NAME
--base-url URL`), so CLI tests see the exact request bodies over real HTTP. It answers
`POST .../chat/completions` from a queue of `Reply` (see tests/providers/_provider_fakes.py)
or `HANG` (the model is still thinking: the request gets no answer until the server closes;
`hung` is set when it arrives) or `DOWN` (sets `down`). While `down` is set, every request
gets HTTP 503 (a server that is down), which the SDK retries at once (`retry-after-ms: 1`)
until it gives up; clear `down` to bring the server back.

A `Stream` (tests/providers/_provider_fakes.py) is answered as server-sent events, each one
written and flushed in turn; a `HOLD` among its events stops the stream there (`holding` is
set) until the test sets `release`, so a test can see what a client shows of a reply that
has not finished arriving.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.providers._provider_fakes import Reply, Stream, sse_event

HANG = "hang"
HOLD = "<hold>"  # in a Stream's events: wait for `release` before the next one
DOWN = "down"  # the server goes down here: this request and every later one get HTTP 503


_DOWN_REPLY = Reply(
    503, {"error": {"message": "server down", "type": "server_error"}}, {"retry-after-ms": "1"}
)


class ChatServer:
    def __init__(self, *replies: Reply | Stream | str) -> None:
        self.queue: list[Reply | Stream | str] = list(replies)
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.down = False
        self.hung = threading.Event()
        self.holding = threading.Event()
        self.release = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                item = server._take(self.path, body)
                if item == HANG:
                    server.hung.set()
                    server._closing.wait()
                    return
                if isinstance(item, Stream):
                    self._stream(item)
                    return
                assert isinstance(item, Reply)
                payload = json.dumps(item.body).encode()
                self.send_response(item.status)
                for name, value in {"content-type": "application/json", **item.headers}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, item: Stream) -> None:
                self.send_response(item.status)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()  # (HTTP/1.0: the body ends when the connection closes)
                for event in item.events:
                    if event == HOLD:
                        server.holding.set()
                        server.release.wait()
                        continue
                    self.wfile.write(sse_event(event, named=item.named))
                    self.wfile.flush()

            def log_message(self, *_args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def _take(self, path: str, body: dict[str, Any]) -> Reply | Stream | str:
        with self._lock:
            if not self.down and self.queue and self.queue[0] == DOWN:
                self.queue.pop(0)
                self.down = True
            if self.down:
                return _DOWN_REPLY
            self.paths.append(path)
            self.bodies.append(body)
            if not self.queue:
                return Reply(400, {"error": {"message": "ChatServer: no reply queued"}})
            return self.queue.pop(0)

    def add(self, *replies: Reply | Stream | str) -> None:
        with self._lock:
            self.queue.extend(replies)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> ChatServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def chat_server(*replies: Reply | Stream | str) -> Iterator[ChatServer]:
    server = ChatServer(*replies).start()
    try:
        yield server
    finally:
        server.close()
