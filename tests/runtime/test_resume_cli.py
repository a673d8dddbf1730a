"""`toolfsm run` / `runs resume` / `runs approve` in subprocesses against an OpenAI-compatible
server (tests/_llm_server.py, the real `openai` SDK over real HTTP): a kill during the model
call, a server that was down, a pause at step 2; no side effect twice, every request a valid
Chat Completions history (tests/_history.py), the run's provider settings kept.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.machine import StopReason
from engine.providers import make_provider
from engine.runtime import Runner, load_agent
from engine.runtime.resume import provider_for_run
from engine.store import open_store
from tests._history import assert_valid_chat_histories
from tests._llm_server import DOWN, HANG, chat_server
from tests.providers._provider_fakes import oa_completion
from tests.runtime._cli import env_for, ledger, make_workdir, only_run, toolfsm
from tests.runtime.test_durability import AGENT, TOOLS

REPO = Path(__file__).resolve().parents[2]


def reply(cid: str, name: str, text: str | None = None, **args: Any) -> Any:
    return oa_completion(text, [(cid, name, json.dumps(args))])


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return make_workdir(tmp_path, AGENT, TOOLS)


def model_args(server: Any) -> list[str]:
    return ["--model", "openai:local", "--base-url", server.url]


def test_killed_while_the_model_thinks_then_resumed_runs_no_call_twice(workdir: Path) -> None:
    with chat_server(
        reply("c1", "lookup", account="a1"),
        reply("c2", "charge", charge_id="ch1", amount=10),
        HANG,  # step 2's model call: the process is killed while it waits
    ) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", "agent.yaml", *model_args(server)],
            cwd=workdir,
            env=env_for(workdir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert server.hung.wait(60), "the run never reached step 2's model call"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        before = only_run(workdir)
        assert (before.run.status, before.run.steps_count) == ("running", 2)
        assert ledger(workdir) == ["lookup:a1", "charge:ch1"]

        server.add(reply("c3", "charge", charge_id="ch2", amount=5), reply("c4", "finish"))
        toolfsm(workdir, "runs", "resume", before.run.id[:12])
        # Each side effect ran once: the resume asked the model again, it did not replay
        # step 1's reply.
        assert ledger(workdir) == ["lookup:a1", "charge:ch1", "charge:ch2", "finish:"]
        after = only_run(workdir)
        assert (after.run.status, after.run.stop_reason) == ("finished", "terminal_tool")
        assert len(after.steps) == 4
        assert_valid_chat_histories(server.bodies)
        # The request made again after the kill is the one the killed process made.
        assert server.bodies[3]["messages"] == server.bodies[2]["messages"]


def test_a_run_stopped_by_a_server_error_resumes_from_its_last_step(workdir: Path) -> None:
    # The first step goes through, then the server goes down (the SDK's retries fail too).
    with chat_server(reply("c1", "lookup", account="a1"), DOWN) as server:
        first = toolfsm(
            workdir,
            "run",
            "agent.yaml",
            "--model",
            "openai:local",
            "--base-url",
            server.url,
            code=1,
        )
        assert "stopped: error" in first.stdout
        assert "resume:  toolfsm runs resume" in first.stdout
        failed = only_run(workdir)
        assert (failed.run.status, failed.run.stop_reason) == ("failed", "error")
        assert failed.run.steps_count == 1 and "503" in (failed.run.error or "")
        shown = toolfsm(workdir, "runs", "show", failed.run.id)
        assert f"resume:  toolfsm runs resume {failed.run.id[:12]}" in shown.stdout

        server.down = False  # the cause is fixed
        server.add(reply("c2", "charge", charge_id="ch1", amount=10), reply("c3", "finish"))
        done = toolfsm(workdir, "runs", "resume", failed.run.id[:12])
        assert "stopped: terminal_tool" in done.stdout
        assert ledger(workdir) == ["lookup:a1", "charge:ch1", "finish:"]
        after = only_run(workdir)
        assert (after.run.status, after.run.stop_reason, after.run.error) == (
            "finished",
            "terminal_tool",
            None,
        )
        assert [s.seq for s in after.steps] == [0, 1, 2]
        assert after.steps[0] == failed.steps[0]
        assert_valid_chat_histories(server.bodies)
        # A finished run is not resumed.
        again = toolfsm(workdir, "runs", "resume", failed.run.id, code=2)
        assert "finished" in again.stderr and "Traceback" not in again.stderr


def test_approve_rebuilds_the_provider_with_the_run_settings(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER", str(workdir / "ledger"))
    monkeypatch.delenv("BLOCK_AT", raising=False)
    with chat_server(
        reply("c1", "lookup", account="a1"),
        reply("c2", "approve_refund", refund_id="r1"),
    ) as server:
        # Not the defaults: filter gating (for a server without allowed_tools), no retries.
        settings = {"base_url": server.url, "gating": "filter", "max_retries": 0, "timeout": 30}
        agent = load_agent(workdir / "agent.yaml")
        with open_store(env_for(workdir)["TOOLFSM_DB"]) as store:
            runner = Runner(
                agent,
                make_provider("openai:local", **settings),
                store=store,
                model="openai:local",
                options={"provider": "openai", "provider_options": settings},
            )
            paused = asyncio.run(runner.run("settle a1"))
            assert paused.stop_reason is StopReason.AWAITING_APPROVAL
            stored = store.get_run(paused.run_id)
            assert provider_for_run(stored).gating == "filter"

        server.add(reply("c3", "finish"))
        approved = toolfsm(workdir, "runs", "approve", paused.run_id[:12])
        assert "stopped: terminal_tool" in approved.stdout
        assert ledger(workdir) == ["lookup:a1", "approve_refund:r1", "finish:"]
        # Every request, before and after the approval, used filter gating at this server.
        assert len(server.bodies) == 3
        assert all("allowed_tools" not in json.dumps(b) for b in server.bodies)
        assert server.bodies[2]["tool_choice"] == "auto"
        assert_valid_chat_histories(server.bodies)


def _as_completions(script: Path) -> list[Any]:
    """A scripted example's replies as a Chat Completions server sends them."""
    replies = yaml.safe_load(script.read_text())["replies"]
    out = []
    for number, entry in enumerate(replies):
        calls = entry.get("calls") or ([entry] if "call" in entry else [])
        out.append(
            oa_completion(
                entry.get("text"),
                [
                    (f"call_{number}_{index}", c["call"], json.dumps(c.get("args", {})))
                    for index, c in enumerate(calls)
                ],
            )
        )
    return out


def test_the_support_example_approved_at_step_2_sends_valid_histories(tmp_path: Path) -> None:
    example = REPO / "examples" / "support"
    replies = _as_completions(example / "script.yaml")
    with chat_server(*replies[:3]) as server:  # steps 0-2: the refund waits for approval
        paused = toolfsm(tmp_path, "run", str(example / "agent.yaml"), *model_args(server))
        assert "stopped: awaiting_approval" in paused.stdout
        run = only_run(tmp_path).run
        assert run.steps_count == 2
        server.add(*replies[3:])
        approved = toolfsm(tmp_path, "runs", "approve", run.id[:12])
        assert "stopped: terminal_tool" in approved.stdout
        assert len(server.bodies) == len(replies)
        assert_valid_chat_histories(server.bodies)
        # The first request after the approval continues the conversation of step 2.
        after = server.bodies[3]["messages"]
        assert after[: len(server.bodies[2]["messages"])] == server.bodies[2]["messages"]
        assert [m["role"] for m in after[len(server.bodies[2]["messages"]) :]] == [
            "assistant",
            "tool",
        ]
