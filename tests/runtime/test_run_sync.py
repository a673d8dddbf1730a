"""`Runner.run_sync` and `engine.run_sync`: a run from code without an event loop (issue 11)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

import engine
from engine.runtime.sync import EventLoopRunningError
from tests._llm_server import chat_server
from tests.providers._provider_fakes import oa_completion
from tests.runtime._helpers import make_agent

AGENT = """\
version: 1
agent: sync
tools: [look, finish]
rules:
  - init: look
  - terminal: finish
run:
  input: Look, then finish.
"""
SCRIPT = [
    {"call": "look", "args": {"what": "x"}},
    {"call": "finish", "args": {"text": "done"}},
]
CALLS: list[str] = []


def look(what: str) -> str:
    """Look at something."""
    CALLS.append(f"look:{what}")
    return f"saw {what}"


def finish(text: str) -> str:
    """Finish."""
    CALLS.append(f"finish:{text}")
    return text


def _agent() -> engine.Agent:
    return make_agent(AGENT, look, finish)


def test_run_sync_runs_to_the_end_outside_an_event_loop() -> None:
    CALLS.clear()
    runner = engine.Runner(_agent(), engine.ScriptedProvider(SCRIPT))
    result = runner.run_sync("go")
    assert (result.stop_reason, result.steps) == (engine.StopReason.TERMINAL_TOOL, 2)
    assert CALLS == ["look:x", "finish:done"]


def test_run_sync_inside_an_event_loop_says_what_to_await_and_starts_nothing() -> None:
    CALLS.clear()
    runner = engine.Runner(_agent(), engine.ScriptedProvider(SCRIPT))

    async def inside() -> list[str]:
        messages = []
        with pytest.raises(EventLoopRunningError) as caught:
            runner.run_sync("go")
        messages.append(str(caught.value))
        with pytest.raises(EventLoopRunningError) as caught:
            engine.run_sync(runner.agent, provider=engine.ScriptedProvider(SCRIPT))
        messages.append(str(caught.value))
        return messages

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a coroutine made and never awaited would warn
        messages = asyncio.run(inside())
        gc.collect()
    assert messages == [
        "Runner.run_sync() cannot be called from a running event loop (an async function, a "
        "notebook cell): use 'await runner.run(input)' there",
        "engine.run_sync() cannot be called from a running event loop (an async function, a "
        "notebook cell): use 'await Runner(agent, provider).run(input)' there",
    ]
    assert issubclass(EventLoopRunningError, RuntimeError)  # what asyncio.run raises there
    assert issubclass(EventLoopRunningError, engine.ToolfsmError)
    assert CALLS == []
    # The same runner still runs once out of the loop.
    assert runner.run_sync("go").stop_reason is engine.StopReason.TERMINAL_TOOL


def test_one_provider_serves_several_run_sync_calls_over_kept_alive_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real OpenAI SDK over real HTTP/1.1 keep-alive: a client's pooled connection lives
    on the loop it was opened on, so a new loop per call (asyncio.run) failed the second run
    with "Event loop is closed"."""
    monkeypatch.setenv("SYNC_TEST_KEY", "sk-test")
    replies = [oa_completion("first"), oa_completion("second"), oa_completion("third")]
    with chat_server(*replies) as server:
        server._httpd.RequestHandlerClass.protocol_version = "HTTP/1.1"  # keep connections
        provider = engine.make_provider(
            "openai:gpt-test", base_url=server.url, api_key_env="SYNC_TEST_KEY"
        )
        answer_only = "version: 1\nagent: chat\ntools: [finish]\nrules:\n  - terminal: finish\n"
        runner = engine.Runner(make_agent(answer_only, finish), provider)
        texts = [runner.run_sync("go").text for _ in range(3)]
    assert texts == ["first", "second", "third"]


def test_engine_run_sync_opens_and_closes_what_it_is_given_by_name(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text(AGENT, encoding="utf-8")
    (tmp_path / "script.yaml").write_text(
        "replies:\n  - {call: look, args: {what: y}}\n  - {call: finish, args: {text: ok}}\n",
        encoding="utf-8",
    )
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    # No tools=: this test module's `look` and `finish` are bound by name.
    result = engine.run_sync(
        tmp_path / "agent.yaml", provider=f"scripted:{tmp_path / 'script.yaml'}", store=url
    )
    assert result.stop_reason is engine.StopReason.TERMINAL_TOOL
    store = engine.open_store(url)
    try:
        run = store.get_run(result.run_id)
        assert (run.status, run.input) == ("finished", "Look, then finish.")
    finally:
        store.close()


def test_engine_run_sync_without_any_input_is_refused(tmp_path: Path) -> None:
    agent = make_agent(
        AGENT.replace("  input: Look, then finish.\n", "  max_steps: 5\n"), look, finish
    )
    with pytest.raises(engine.ToolfsmError, match=r"no input given and no run\.input"):
        engine.run_sync(agent, provider=engine.ScriptedProvider(SCRIPT))


CTRL_C_SCRIPT = """\
import pathlib, time, engine

def wait() -> str:
    pathlib.Path("started").touch()
    while not pathlib.Path("release").exists():  # the test releases it once it has looked
        time.sleep(0.02)
    return "waited"

def done() -> str:
    return "ok"

store = engine.open_store("sqlite:///runs.db")
provider = engine.ScriptedProvider([{"call": "wait", "args": {}}, {"call": "done", "args": {}}])
try:
    engine.Runner(engine.load_agent("agent.yaml"), provider, store=store).run_sync("go")
except KeyboardInterrupt:
    (run,) = store.list_runs(limit=1)
    # Whether the tool was released yet: not, when the interrupt came at once.
    print("interrupted", run.status, run.stop_reason, pathlib.Path("release").exists())
"""


def test_ctrl_c_during_run_sync_cancels_the_run_on_record_and_raises_at_once(
    tmp_path: Path,
) -> None:
    """A real process: SIGINT while a sync tool runs. KeyboardInterrupt reaches the caller
    while the tool is still running (it waits for `release`), with the run stored cancelled."""
    (tmp_path / "agent.yaml").write_text(
        "version: 1\nagent: slow\ntools: [wait, done]\nrules:\n  - init: wait\n"
        "  - terminal: done\n",
        encoding="utf-8",
    )
    (tmp_path / "script.py").write_text(CTRL_C_SCRIPT, encoding="utf-8")
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "script.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # A watchdog, not a timing assertion: should the interrupt wait for the tool, the tool is
    # released after a minute and the script prints True below.
    watchdog = threading.Timer(60, (tmp_path / "release").touch)
    watchdog.start()
    try:
        while not (tmp_path / "started").exists():
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # then the tool may finish, and the process exit
        (tmp_path / "release").touch()
        out, err = proc.communicate(timeout=180)
    finally:
        watchdog.cancel()
        (tmp_path / "release").touch()
        if proc.poll() is None:
            proc.kill()
    assert (line, out) == ("interrupted cancelled cancelled False\n", ""), (line, out, err)
    assert proc.returncode == 0, err
