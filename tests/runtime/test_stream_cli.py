"""`toolfsm run` streams: against a local Chat Completions server (tests/_llm_server.py, the
real `openai` SDK over real HTTP) that holds its stream open after the first text chunk, the
live view prints that text before the reply is complete; the run then goes on as a run does,
and the store keeps the complete replies only."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

from tests._llm_server import HOLD, chat_server
from tests.providers._provider_fakes import Stream, oa_stream
from tests.runtime._cli import env_for, ledger, make_workdir, toolfsm
from tests.runtime.test_durability import AGENT, TOOLS

# A watchdog against a hang, far above what any step needs: not a timing check.
WATCHDOG_SECONDS = 120


class Output:
    """A subprocess's stdout, read as it comes, in a thread."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.text = ""
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(4096):
            with self._changed:
                self.text += chunk.decode()
                self._changed.notify_all()

    def wait_for(self, text: str) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: text in self.text, WATCHDOG_SECONDS)

    def rest(self) -> str:
        self._thread.join(WATCHDOG_SECONDS)
        return self.text


def test_run_prints_the_models_text_before_the_reply_is_complete(tmp_path: Path) -> None:
    workdir = make_workdir(tmp_path, AGENT, TOOLS)
    first = oa_stream(
        "Looking up ", "the account", " now.", calls=[("c1", "lookup", ['{"acc', 'ount": "a1"}'])]
    )
    events = list(first.events)
    held = Stream((*events[:2], HOLD, *events[2:]))  # held after "Looking up "
    with chat_server(held, oa_stream(calls=[("c2", "finish", ["{}"])])) as server:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine",
                "run",
                "agent.yaml",
                "--model",
                "openai:local",
                "--base-url",
                server.url,
            ],
            cwd=workdir,
            env=env_for(workdir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out = Output(proc)
        try:
            assert server.holding.wait(WATCHDOG_SECONDS), "the server never streamed"
            # The stream is held open: the rest of the reply has not been sent.
            assert out.wait_for("  model: Looking up"), out.text
            assert "the account" not in out.text and "lookup(" not in out.text
            server.release.set()
            assert proc.wait(WATCHDOG_SECONDS) == 0, out.rest()
        finally:
            server.release.set()
            if proc.poll() is None:
                proc.kill()
        text = out.rest()
        assert server.bodies[0]["stream"] is True
        assert server.bodies[0]["stream_options"] == {"include_usage": True}

    lines = text.splitlines()
    assert "  model: Looking up the account now." in lines
    assert lines.index("  model: Looking up the account now.") < lines.index(
        '  → lookup(account="a1")'
    )
    assert ledger(workdir) == ["lookup:a1", "finish:"]
    assert any(line.startswith("stopped: terminal_tool") for line in lines)
    # The history sent on holds the complete reply, arguments whole, as without streaming.
    assistant = server.bodies[1]["messages"][2]
    assert assistant["content"] == "Looking up the account now."
    assert assistant["tool_calls"][0]["function"] == {
        "name": "lookup",
        "arguments": '{"account": "a1"}',
    }
    # So does the store: `runs show` prints the step from the reply stored.
    run_id = re.search(r"^run (\S+)", text, re.MULTILINE).group(1)  # type: ignore[union-attr]
    shown = toolfsm(workdir, "runs", "show", run_id).stdout.splitlines()
    assert "  model: Looking up the account now." in shown
