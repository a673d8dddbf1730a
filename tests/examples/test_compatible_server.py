"""`toolfsm run` in a subprocess against a model server on 127.0.0.1 that answers as
OpenAI-compatible servers do (llama-cpp-python's refusals, a server that ignores forcing,
malformed replies), and a store conflict: every run ends with a defined stop reason, every
step in the store, one-line errors, never a traceback."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _example_cli import REPO, Cli, calls
from _fake_server import (
    Answer,
    completion,
    llama_cpp_allowed_tools_refusal,
    refuses_null_content,
    serve,
)

from tests._inprocess import toolfsm_in_process

SCREENING = "examples/screening/agent.yaml"


def run_cli(
    cli: Cli, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`toolfsm ARGS` in this process (tests/_inprocess.py), with `env` over the Cli's."""
    return toolfsm_in_process(args, env={**cli.env(), **(env or {})}, cwd=REPO)


def assert_clean(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr


def llama_cpp_server(answers: Iterator[Answer]) -> Any:
    """llama-cpp-python's server: allowed_tools and `content: null` refused with HTTP 500."""

    def respond(body: dict[str, Any]) -> Answer:
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
            return llama_cpp_allowed_tools_refusal(choice)
        return refuses_null_content(body) or next(answers)

    return respond


def test_screening_against_llama_cpp_falls_back_to_filtering_and_loses_no_step(cli: Cli) -> None:
    answers = iter(
        [
            completion(None, [("c1", "load_application", {"application_id": "A-1042"})]),
            completion(None, [("c2", "check_requirements", {"application_id": "A-1042"})]),
            completion(
                "Inviting.",
                [
                    (
                        "c3",
                        "schedule_interview",
                        {"application_id": "A-1042", "slot": "2025-03-03T10:00"},
                    )
                ],
            ),
        ]
    )
    with serve(llama_cpp_server(answers)) as server:
        proc = run_cli(
            cli, "run", SCREENING, "--model", "openai:smollm2", "--base-url", server.openai_url
        )
    assert_clean(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "stopped: terminal_tool" in proc.stdout
    assert "! the server refused tool_choice allowed_tools (HTTP 500: " in proc.stdout
    # One refused request, then each step once, filtered: the forced tool named.
    choices = [b["tool_choice"] for b in server.bodies]
    assert choices[0]["type"] == "allowed_tools"
    assert choices[1:] == [
        {"type": "function", "function": {"name": n}}
        for n in ("load_application", "check_requirements", "schedule_interview")
    ]
    assert [[t["function"]["name"] for t in b["tools"]] for b in server.bodies[1:]] == [
        ["load_application"],
        ["check_requirements"],
        ["schedule_interview"],
    ]
    snap = cli.last_run()
    assert snap.run.stop_reason == "terminal_tool" and len(snap.steps) == 3
    assert calls(snap) == [
        (0, "load_application", "finished"),
        (1, "check_requirements", "finished"),
        (2, "schedule_interview", "finished"),
    ]
    assert "notice" in snap.steps[0].reply and "notice" not in snap.steps[1].reply
    shown = cli("runs", "show").stdout
    assert "! the server refused tool_choice allowed_tools" in shown
    assert f"client: base URL {server.openai_url}" in shown


FORCED_AGENT = """\
version: 1
agent: forced
tools: [pick_a, pick_b, later]
rules:
  - init: [pick_a, pick_b]
  - terminal: [later]
run:
  input: Pick one.
"""
FORCED_TOOLS = '''\
def pick_a() -> str:
    """Pick a."""
    return "a"


def pick_b() -> str:
    """Pick b."""
    return "b"


def later() -> str:
    """Later."""
    return "later"
'''


@pytest.mark.parametrize("server_kind", ["ignores", "refuses_required"])
def test_a_server_that_does_not_honour_forcing_stops_the_run_after_bounded_re_asks(
    cli: Cli, tmp_path: Path, server_kind: str
) -> None:
    (tmp_path / "agent.yaml").write_text(FORCED_AGENT)
    (tmp_path / "tools.py").write_text(FORCED_TOOLS)

    def respond(body: dict[str, Any]) -> Answer:
        if server_kind == "refuses_required" and body.get("tool_choice") != "auto":
            return (500, "", "text/plain")  # llama.cpp with some chat templates
        return completion("I will not call a tool.")

    with serve(respond) as server:
        proc = run_cli(
            cli,
            "run",
            str(tmp_path / "agent.yaml"),
            "--model",
            "openai:smollm2",
            "--base-url",
            server.openai_url,
            "--retries",
            "0",
        )
    assert_clean(proc)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "stopped: forcing_ignored" in proc.stdout
    assert "does not honour a forced tool_choice" in proc.stdout
    snap = cli.last_run()
    assert snap.run.status == "failed" and snap.run.stop_reason == "forcing_ignored"
    assert "does not honour a forced tool_choice" in (snap.run.error or "")
    assert [s.reason for s in snap.steps] == ["forced_call_missing"] * 3
    assert not snap.calls
    # Every re-ask offered only the allowed tools; the tool outside them never.
    for body in server.bodies[1:]:
        assert [t["function"]["name"] for t in body["tools"]] == ["pick_a", "pick_b"]
    if server_kind == "refuses_required":
        assert server.bodies[-1]["tool_choice"] == "auto"
    shown = cli("runs", "show")
    assert "forcing_ignored" in shown.stdout


def malformed_openai(kind: str) -> Answer:
    if kind == "message_null":
        status, body, ct = completion("x")
        body["choices"][0]["message"] = None
        return status, body, ct
    if kind == "empty_id_and_name":
        status, body, ct = completion(None, [("", "", {})])
        return status, body, ct
    return 200, "<html><body>502 Bad Gateway</body></html>", "text/html"


@pytest.mark.parametrize("kind", ["message_null", "empty_id_and_name", "not_json"])
def test_a_malformed_openai_reply_stops_the_run_with_the_reply_stored(cli: Cli, kind: str) -> None:
    with serve(lambda body: malformed_openai(kind)) as server:
        proc = run_cli(
            cli, "run", SCREENING, "--model", "openai:smollm2", "--base-url", server.openai_url
        )
    check_malformed(cli, proc)


def test_an_anthropic_message_without_content_stops_the_run_with_the_reply_stored(cli: Cli) -> None:
    reply = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test"}
    with serve(lambda body: (200, reply, "application/json")) as server:
        proc = run_cli(
            cli,
            "run",
            SCREENING,
            "--model",
            "anthropic:claude-test",
            "--base-url",
            server.url,
            env={"ANTHROPIC_API_KEY": "sk-ant-test"},
        )
    check_malformed(cli, proc)
    assert json.loads(cli.last_run().steps[0].reply["malformed"]) == reply


def check_malformed(cli: Cli, proc: subprocess.CompletedProcess[str]) -> None:
    assert_clean(proc)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "stopped: error" in proc.stdout
    errors = [line for line in proc.stdout.splitlines() if "malformed reply:" in line]
    assert len(errors) == 1, proc.stdout
    snap = cli.last_run()
    assert snap.run.status == "failed" and snap.run.stop_reason == "error"
    assert "malformed reply:" in (snap.run.error or "")
    (step,) = snap.steps
    assert step.reason == "malformed_reply" and step.decision == "stop"
    assert step.reply["malformed"]  # the body as received
    assert [m.role for m in snap.messages] == ["user"]  # not in the history
    shown = cli("runs", "show")
    assert "reply as received:" in shown.stdout and "malformed_reply" in shown.stdout


CONFLICT_AGENT = """\
version: 1
agent: conflict
tools: [poke, done]
rules:
  - init: poke
  - terminal: [done]
run:
  input: Go.
"""
CONFLICT_TOOLS = '''\
import os

from engine.store import Append, open_store
from engine.store.events import Paused, Totals


def poke() -> str:
    """Pause this very run from another connection, under its lease, as a second writer
    with the same owner id would: the run's next step event is refused (not running)."""
    store = open_store(os.environ["TOOLFSM_DB"])
    try:
        run = store.list_runs(limit=1)[0]
        totals = Totals(steps=0, input_tokens=0, output_tokens=0)
        paused = Paused(status="awaiting_decision", stop_reason="elsewhere", totals=totals)
        assert store.append([Append(run.id, run.owner, [paused])]) == [None]
    finally:
        store.close()
    return "poked"


def done() -> str:
    """Done."""
    return "done"
'''
CONFLICT_SCRIPT = """\
replies:
  - call: poke
  - call: done
"""


def test_a_store_conflict_stops_the_run_with_a_one_line_error(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text(CONFLICT_AGENT)
    (tmp_path / "tools.py").write_text(CONFLICT_TOOLS)
    (tmp_path / "script.yaml").write_text(CONFLICT_SCRIPT)
    proc = run_cli(cli, "run", str(tmp_path / "agent.yaml"))
    assert_clean(proc)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "stopped: error" in proc.stdout
    assert "the store refused a write" in proc.stdout
    # The run stops on record (this process holds its lease): nothing else of the refused
    # write was stored, and `done` never ran.
    snap = cli.last_run()
    assert [c.tool for c in snap.calls] == ["poke"]
    assert snap.run.status == "failed" and snap.run.stop_reason == "error"
    assert (snap.run.error or "").startswith("the store refused a write: ")
    assert snap.steps == ()


OPTIONS_AGENT = """\
version: 1
agent: options
tools: [pick_a, pick_b, later]
rules:
  - init: [pick_a, pick_b]
  - terminal: [pick_a, pick_b]
run:
  input: Pick one.
  max_tokens: 50
  timeout: 30
  retries: 0
  gating: filter
"""


def test_client_settings_come_from_the_run_block_and_flags_win(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text(OPTIONS_AGENT)
    (tmp_path / "tools.py").write_text(FORCED_TOOLS)
    with serve(lambda body: completion(None, [("c1", "pick_a", {})])) as server:
        agent = str(tmp_path / "agent.yaml")
        base = ["run", agent, "--model", "openai:smollm2", "--base-url", server.openai_url]
        first = run_cli(cli, *base)
        second = run_cli(cli, *base, "--max-tokens", "77", "--gating", "auto", "--retries", "2")
    assert first.returncode == 0 and second.returncode == 0, first.stdout + second.stdout
    one, two = server.bodies
    # run: block: filter gating (the allowed tools, tool_choice required), max_tokens.
    assert one["max_tokens"] == 50 and "max_completion_tokens" not in one
    assert one["tool_choice"] == "required" and len(one["tools"]) == 2
    # flags: allowed_tools gating (every tool), their max_tokens.
    assert two["max_tokens"] == 77 and two["tool_choice"]["type"] == "allowed_tools"
    assert len(two["tools"]) == 3
    snap = cli.last_run()
    assert snap.run.options["provider_options"] == {
        "base_url": server.openai_url,
        "max_tokens": 77,
        "timeout": 30.0,
        "max_retries": 2,
        "gating": "auto",
    }
    assert (
        f"client: base URL {server.openai_url}, max_tokens 77, timeout 30.0, retries 2, "
        "gating auto" in cli("runs", "show").stdout
    )


def test_a_timeout_stops_the_run_and_names_the_options(cli: Cli, tmp_path: Path) -> None:
    import threading

    released = threading.Event()

    def never_in_time(body: dict[str, Any]) -> Answer:
        released.wait(60)  # far past the client's timeout; released when the test is done
        return completion("too late")

    with serve(never_in_time) as server:
        try:
            proc = run_cli(
                cli,
                "run",
                SCREENING,
                "--model",
                "openai:smollm2",
                "--base-url",
                server.openai_url,
                "--timeout",
                "0.5",
                "--retries",
                "1",
            )
        finally:
            released.set()
    assert_clean(proc)
    assert proc.returncode == 1
    assert (
        "timeout: request timed out after 0.5 s (--timeout, run.timeout); gave up after 1 "
        "retry (--retries, run.retries)" in proc.stdout
    )
    assert cli.last_run().run.stop_reason == "error"


def test_a_flag_that_does_not_apply_to_the_provider_is_a_usage_error(cli: Cli) -> None:
    proc = run_cli(cli, "run", SCREENING, "--timeout", "5")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "toolfsm: error: --timeout applies to openai and anthropic models only, not to "
        "--model scripted"
    )
    proc = run_cli(
        cli,
        "run",
        SCREENING,
        "--model",
        "anthropic:claude-test",
        "--gating",
        "filter",
        env={"ANTHROPIC_API_KEY": "sk-ant-test"},
    )
    assert proc.returncode == 2
    assert "--gating applies to openai models only" in proc.stderr
