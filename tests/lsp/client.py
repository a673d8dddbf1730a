"""A small LSP client for the tests: JSON-RPC 2.0 over a subprocess's stdio, Content-Length framed.

It speaks the wire protocol itself (no LSP library), so a test sees exactly what an editor
would. Requests block until their response arrives; notifications the server sends meanwhile
(`textDocument/publishDiagnostics`, log messages) are kept for `wait_for`, and requests the
server makes of the client (`workspace/configuration`, `client/registerCapability`, ...) are
answered with a null result or the configured values.

A reader thread moves messages from the server's stdout into a queue, so a server that dies
or never answers fails the test after `timeout` seconds instead of hanging it (a safety net,
never part of what a test asserts).
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

Message = dict[str, Any]


def _read_message(stream: BinaryIO) -> Message | None:
    """One framed message, or None at end of stream."""
    length = None
    while True:
        line = stream.readline()
        if not line:
            return None
        line = line.strip()
        if not line:
            break
        name, _, value = line.decode("ascii").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is None:
        raise RuntimeError("LSP message without a Content-Length header")
    body = stream.read(length)
    return json.loads(body.decode("utf-8"))  # type: ignore[no-any-return]


class LspClient:
    """A language-server subprocess and the client end of its JSON-RPC connection."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        cwd: Path | None = None,
        settings: dict[str, Any] | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.process = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
        )
        self.settings = settings or {}
        self.timeout = timeout
        self.notifications: list[Message] = []
        self._inbox: queue.Queue[Message | None] = queue.Queue()
        self._next_id = 0
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    # -- wire ------------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        assert self.process.stdout is not None
        while (message := _read_message(self.process.stdout)) is not None:
            self._inbox.put(message)
        self._inbox.put(None)

    def _send(self, message: Message) -> None:
        assert self.process.stdin is not None
        body = json.dumps({"jsonrpc": "2.0", **message}).encode("utf-8")
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def _receive(self) -> Message:
        try:
            message = self._inbox.get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError(f"no message from the server in {self.timeout} s") from None
        if message is None:
            raise RuntimeError("the server closed its output; stderr:\n" + self.stderr())
        return message

    def _dispatch(self, message: Message) -> None:
        """Keep a notification; answer a request the server makes of the client."""
        if "id" not in message:
            self.notifications.append(message)
            return
        result: Any = None
        if message["method"] == "workspace/configuration":
            items = message["params"]["items"]
            result = [self.settings.get(item.get("section", ""), None) for item in items]
        self._send({"id": message["id"], "result": result})

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stderr is not None
        return self.process.stderr.read().decode("utf-8", "replace")

    # -- protocol --------------------------------------------------------------------------------

    def request(self, method: str, params: Any) -> Any:
        """Send a request and return its result (RuntimeError on an error response)."""
        self._next_id += 1
        request_id = self._next_id
        self._send({"id": request_id, "method": method, "params": params})
        while True:
            message = self._receive()
            if message.get("id") == request_id and "method" not in message:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result")
            self._dispatch(message)

    def notify(self, method: str, params: Any) -> None:
        self._send({"method": method, "params": params})

    def wait_for(self, method: str, accept: Callable[[Message], bool] = lambda m: True) -> Message:
        """The first notification `method` (already received or still to come) that `accept`s,
        consumed so that a later wait sees only later ones."""
        while True:
            for index, message in enumerate(self.notifications):
                if message["method"] == method and accept(message):
                    return self.notifications.pop(index)
            self._dispatch(self._receive())

    def initialize(self, root: Path, capabilities: dict[str, Any] | None = None) -> Any:
        result = self.request(
            "initialize",
            {
                "processId": None,
                "rootUri": root.as_uri(),
                "capabilities": capabilities or {},
                "workspaceFolders": [{"uri": root.as_uri(), "name": root.name}],
            },
        )
        self.notify("initialized", {})
        return result

    def open(self, path: Path, text: str, language: str = "yaml") -> str:
        uri = path.as_uri()
        self.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": language, "version": 1, "text": text}},
        )
        return uri

    def change(self, uri: str, text: str, version: int) -> None:
        self.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"text": text}],
            },
        )

    def diagnostics(self, uri: str, version: int | None = None) -> list[Message]:
        """The next diagnostics published for `uri` (for `version`, when the server says it)."""

        def fits(message: Message) -> bool:
            params = message["params"]
            if params["uri"] != uri:
                return False
            return version is None or params.get("version") in (None, version)

        return self.wait_for("textDocument/publishDiagnostics", fits)["params"]["diagnostics"]  # type: ignore[no-any-return]

    def close(self) -> int:
        """Shut the server down politely; its exit code."""
        try:
            if self.process.poll() is None:
                self.request("shutdown", None)
                self.notify("exit", None)
            return self.process.wait(timeout=self.timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> LspClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
