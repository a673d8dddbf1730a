"""Agents that message agents (issue 13), through the Runner on real SQLite and PostgreSQL
stores: matching, the texts callees receive, concurrency, the depth limit, caller exclusion,
errors as results, child runs linked in the store, cancel and resume."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from _agents import call_result, reviewer, run, runner_for, write_agent

from engine.language.agenttools import ASYNC_PREFIX, ONE_PREFIX, SENT, TAGS_PREFIX
from engine.machine import StopReason
from engine.runtime.agents import AgentDirectory, child_run_id
from engine.store.status import RunStatus

TAGS_TOOL = "send_message_to_agents_matching_tags"
ONE_TOOL = "send_message_to_agent_and_wait_for_reply"
ASYNC_TOOL = "send_message_to_agent_async"


def _boss(folder: Path, tools: list[str], replies: list[dict[str, Any]], extra: str = "") -> Path:
    return write_agent(
        folder,
        f"""\
        version: 1
        agent: boss
        tags: [lead, reviewer]
        tools: {json.dumps([*tools, "done"])}
        rules:
          - terminal: done
        {extra}
        """,
        tools="def done() -> str:\n    return 'done'\n",
        replies=[*replies, {"call": "done"}],
    )


@pytest.fixture
def team(tmp_path: Path) -> Path:
    """Three reviewers (backend, frontend, docs) and a tester, under tmp_path/team."""
    root = tmp_path / "team"
    reviewer(root / "a", "rev_backend", ["reviewer", "backend"], "backend ok")
    reviewer(root / "b", "rev_frontend", ["reviewer", "frontend"], "frontend ok")
    reviewer(root / "c", "rev_docs", ["reviewer", "docs"], "docs ok")
    reviewer(root / "d", "tester", ["qa", "backend"], "tests ok")
    return root


def test_matching_every_tag_of_match_all_and_one_of_match_some(team: Path) -> None:
    directory = AgentDirectory.from_paths([team])
    names = lambda found: [c.name for c in found]  # noqa: E731
    assert names(directory.match(["reviewer"], [])) == ["rev_backend", "rev_docs", "rev_frontend"]
    assert names(directory.match(["reviewer"], ["backend", "frontend"])) == [
        "rev_backend",
        "rev_frontend",
    ]
    assert names(directory.match([], ["backend"])) == ["rev_backend", "tester"]
    assert names(directory.match(["reviewer", "backend"], [])) == ["rev_backend"]
    # Empty lists set no constraint; a tag nobody has matches nobody.
    assert names(directory.match([], [])) == ["rev_backend", "rev_docs", "rev_frontend", "tester"]
    assert names(directory.match(["nobody"], [])) == []
    assert names(directory.match([], [], exclude=["tester"])) == names(
        directory.match(["reviewer"], [])
    )


def test_tag_call_messages_the_matches_in_id_order_with_letta_s_text(
    team: Path, store: Any
) -> None:
    args = {"message": "review PR 7", "match_all": ["reviewer"], "match_some": ["backend", "docs"]}
    boss = _boss(team / "boss", [TAGS_TOOL], [{"call": TAGS_TOOL, "args": args}])
    result = run(boss, team, store)
    assert result.stop_reason is StopReason.TERMINAL_TOOL
    entries, call = call_result(store, result.run_id, TAGS_TOOL)
    assert call.status == "finished" and not call.is_error
    assert [(e["agent_id"], e["agent_name"], e["response"], e["stop_reason"]) for e in entries] == [
        ("rev_backend", "rev_backend", ["backend ok"], "end_turn"),
        ("rev_docs", "rev_docs", ["docs ok"], "end_turn"),
    ]
    for entry in entries:
        assert entry["run_id"] == child_run_id(result.run_id, call.call_id, entry["agent_id"])
        child = store.load_run(entry["run_id"])
        # One system-role message, Letta's prefix, then the message.
        assert child.conversation[0] == {"role": "system", "text": f"{TAGS_PREFIX} review PR 7"}
        assert child.run.input == f"{TAGS_PREFIX} review PR 7"
        # Linked in the store.
        assert (child.run.parent_run_id, child.run.parent_call_id, child.run.depth) == (
            result.run_id,
            call.call_id,
            1,
        )
    linked = store.list_runs(parent=result.run_id)
    assert sorted(r.agent_name for r in linked) == ["rev_backend", "rev_docs"]
    assert store.get_run(result.run_id).parent_run_id is None
    assert store.get_run(result.run_id).depth == 0


def test_empty_tag_lists_message_everyone_but_the_caller(team: Path, sqlite_store: Any) -> None:
    args = {"message": "hi", "match_all": [], "match_some": []}
    boss = _boss(team / "boss", [TAGS_TOOL], [{"call": TAGS_TOOL, "args": args}])
    result = run(boss, team, sqlite_store)
    entries, _ = call_result(sqlite_store, result.run_id, TAGS_TOOL)
    # boss has the tag `reviewer` too, and is never its own callee.
    assert [e["agent_id"] for e in entries] == ["rev_backend", "rev_docs", "rev_frontend", "tester"]


def test_one_agent_and_async_sends_name_the_sender(team: Path, sqlite_store: Any) -> None:
    replies = [
        {"call": ONE_TOOL, "args": {"message": "ping", "other_agent_id": "tester"}},
        {"call": ASYNC_TOOL, "args": {"message": "fyi", "other_agent_id": "rev_docs"}},
    ]
    boss = _boss(team / "boss", [ONE_TOOL, ASYNC_TOOL], replies)

    async def main() -> Any:
        runner = runner_for(boss, team, sqlite_store)
        result = await runner.run("go")
        assert runner.agents is not None
        await runner.agents.drain()  # the notified agent's run goes on by itself
        return result

    result = asyncio.run(main())
    entry, _ = call_result(sqlite_store, result.run_id, ONE_TOOL)
    assert entry["agent_id"] == "tester" and entry["response"] == ["tests ok"]
    first = sqlite_store.load_run(entry["run_id"]).conversation[0]
    assert first == {"role": "system", "text": f"{ONE_PREFIX.format(sender='boss')} ping"}
    sent, sent_call = call_result(sqlite_store, result.run_id, ASYNC_TOOL)
    assert sent == SENT == "Successfully sent message"
    notified = sqlite_store.get_run(child_run_id(result.run_id, sent_call.call_id, "rev_docs"))
    assert notified.status is RunStatus.FINISHED and notified.parent_run_id == result.run_id
    text = sqlite_store.load_run(notified.id).conversation[0]["text"]
    assert text == f"{ASYNC_PREFIX.format(sender='boss')} fyi"


def test_callees_run_concurrently(tmp_path: Path, store: Any) -> None:
    """Two callees whose tool takes a second each: both had started before either finished."""
    root = tmp_path / "team"
    slow = "import time\n\ndef look() -> str:\n    time.sleep(1)\n    return 'looked'\n"
    reviewer(root / "a", "one", ["w"], "one done", slow)
    reviewer(root / "b", "two", ["w"], "two done", slow)
    args = {"message": "go", "match_all": ["w"], "match_some": []}
    boss = _boss(root / "boss", [TAGS_TOOL], [{"call": TAGS_TOOL, "args": args}])
    result = run(boss, root, store)
    entries, _ = call_result(store, result.run_id, TAGS_TOOL)
    looks = [store.load_run(e["run_id"]).calls[0] for e in entries]
    assert [c.tool for c in looks] == ["look", "look"]
    first, second = looks
    assert first.started_at < second.finished_at and second.started_at < first.finished_at


def test_depth_limit_refuses_a_call_that_would_nest_deeper(tmp_path: Path, store: Any) -> None:
    root = tmp_path / "team"
    reviewer(root / "leaf", "leaf", ["leaf"], "leaf ok")
    write_agent(
        root / "mid",
        """\
        version: 1
        agent: mid
        tags: [mid]
        tools:
          - name: ask_leaf
            agents: {match_all: [leaf]}
        run: {max_agent_depth: 1}
        """,
        replies=[{"call": "ask_leaf", "args": {"message": "deeper"}}, {"text": "mid gave up"}],
    )
    args = {"message": "go", "match_all": ["mid"], "match_some": []}
    boss = _boss(root / "boss", [TAGS_TOOL], [{"call": TAGS_TOOL, "args": args}])
    result = run(boss, root, store)
    assert result.stop_reason is StopReason.TERMINAL_TOOL
    (entry,), _ = call_result(store, result.run_id, TAGS_TOOL)
    assert entry["response"] == ["mid gave up"]
    refused, call = call_result(store, entry["run_id"], "ask_leaf")
    assert call.is_error
    assert "agent calls nest at most 1 deep" in refused and "at depth 2" in refused
    assert store.list_runs(parent=entry["run_id"]) == []  # leaf never ran


def test_caller_and_its_callers_are_excluded(tmp_path: Path, store: Any) -> None:
    root = tmp_path / "team"
    write_agent(
        root / "mid",
        f"""\
        version: 1
        agent: mid
        tools: [{ONE_TOOL}]
        """,
        replies=[
            {"call": ONE_TOOL, "args": {"message": "back to you", "other_agent_id": "boss"}},
            {"call": ONE_TOOL, "args": {"message": "me", "other_agent_id": "mid"}},
            {"text": "mid done"},
        ],
    )
    replies = [{"call": ONE_TOOL, "args": {"message": "go", "other_agent_id": "mid"}}]
    boss = _boss(root / "boss", [ONE_TOOL], replies)
    result = run(boss, root, store)
    entry, _ = call_result(store, result.run_id, ONE_TOOL)
    assert entry["response"] == ["mid done"]
    calls = store.load_run(entry["run_id"]).calls
    assert [(c.is_error, json.loads(c.result)["type"]) for c in calls] == [
        (True, "not_sent"),
        (True, "not_sent"),
    ]
    assert "cannot message itself or the agents that called it" in str(calls[0].result)
    assert store.list_runs(parent=entry["run_id"]) == []


def test_failures_and_step_limits_come_back_as_results(tmp_path: Path, store: Any) -> None:
    root = tmp_path / "team"
    reviewer(root / "ok", "fine", ["w"], "fine ok")
    write_agent(  # its script runs out: the run stops with an error
        root / "broken",
        "version: 1\nagent: broken\ntags: [w]\ntools: [look]\n",
        tools="def look() -> str:\n    return 'x'\n",
        replies=[{"call": "look"}],
    )
    write_agent(  # calls look for ever: stopped by its step limit
        root / "busy",
        "version: 1\nagent: busy\ntags: [w]\ntools: [look]\nrun: {max_steps: 2}\n",
        tools="def look() -> str:\n    return 'x'\n",
        replies=[{"text": "looking", "call": "look"}, {"call": "look"}],
    )
    replies = [
        {"call": TAGS_TOOL, "args": {"message": "go", "match_all": ["w"], "match_some": []}},
        {"call": ONE_TOOL, "args": {"message": "hello", "other_agent_id": "ghost"}},
    ]
    boss = _boss(root / "boss", [TAGS_TOOL, ONE_TOOL], replies)
    result = run(boss, root, store)
    assert result.stop_reason is StopReason.TERMINAL_TOOL  # the caller went on each time
    entries, call = call_result(store, result.run_id, TAGS_TOOL)
    assert not call.is_error
    by_name = {e["agent_id"]: e for e in entries}
    assert list(by_name) == ["broken", "busy", "fine"]
    assert by_name["broken"]["type"] == "error" and by_name["broken"]["stop_reason"] == "error"
    assert "script" in by_name["broken"]["error"]
    assert by_name["busy"]["type"] == "step_limit" and by_name["busy"]["response"] == ["looking"]
    assert by_name["fine"]["response"] == ["fine ok"] and "error" not in by_name["fine"]
    ghost, ghost_call = call_result(store, result.run_id, ONE_TOOL)
    assert (
        ghost_call.is_error and ghost["type"] == "not_sent" and "no agent 'ghost'" in ghost["error"]
    )


def test_cancelling_the_caller_cancels_its_callees_and_resume_finishes_them(
    tmp_path: Path, sqlite_store: Any
) -> None:
    root = tmp_path / "team"
    gate = tmp_path / "open"
    log = tmp_path / "log"
    waits = f"""\
        import asyncio, pathlib

        async def look() -> str:
            with open({str(log)!r}, "a") as f:
                f.write("look\\n")
            while not pathlib.Path({str(gate)!r}).exists():
                await asyncio.sleep(0.01)
            return "looked"
        """
    reviewer(root / "fast", "fast", ["w"], "fast ok")
    # (idempotent: its call cut off by the cancel runs again on resume, no decision needed)
    reviewer(root / "slow", "slow", ["w"], "slow ok", waits, idempotent=True)
    args = {"message": "go", "match_all": ["w"], "match_some": []}
    boss = _boss(root / "boss", [TAGS_TOOL], [{"call": TAGS_TOOL, "args": args}])

    async def cancel_during_fan_out() -> str:
        runner = runner_for(boss, root, sqlite_store)
        task = asyncio.ensure_future(runner.run("go", run_id="parent"))
        slow_id = None
        while True:  # until the fast callee has finished and the slow one waits in its tool
            await asyncio.sleep(0.01)
            kids = {r.agent_name: r for r in sqlite_store.list_runs(parent="parent")}
            if "slow" in kids and kids.get("fast") and kids["fast"].status is RunStatus.FINISHED:
                slow_id = kids["slow"].id
                if log.exists():
                    break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return slow_id

    slow_id = asyncio.run(cancel_during_fan_out())
    assert sqlite_store.get_run("parent").status is RunStatus.CANCELLED
    assert sqlite_store.get_run(slow_id).status is RunStatus.CANCELLED
    fast = next(r for r in sqlite_store.list_runs(parent="parent") if r.agent_name == "fast")
    fast_events = len(sqlite_store.load_run(fast.id).steps)

    gate.touch()
    result = asyncio.run(runner_for(boss, root, sqlite_store).resume("parent"))
    assert result.stop_reason is StopReason.TERMINAL_TOOL
    entries, _ = call_result(sqlite_store, "parent", TAGS_TOOL)
    assert [e["response"] for e in entries] == [["fast ok"], ["slow ok"]]
    # The finished callee was not run again; the cancelled one was resumed.
    assert len(sqlite_store.load_run(fast.id).steps) == fast_events
    assert sqlite_store.get_run(slow_id).status is RunStatus.FINISHED


def test_concurrency_one_runs_the_callees_one_after_the_other(
    tmp_path: Path, sqlite_store: Any
) -> None:
    root = tmp_path / "team"
    reviewer(root / "a", "one", ["w"], "one done")
    reviewer(root / "b", "two", ["w"], "two done")
    write_agent(
        root / "boss",
        """\
        version: 1
        agent: boss
        tools:
          - name: ask
            agents: {match_all: [w], concurrency: 1}
        """,
        replies=[{"call": "ask", "args": {"message": "go"}}, {"text": "thanks"}],
    )
    result = run(root / "boss" / "agent.yaml", root, sqlite_store)
    entries, _ = call_result(sqlite_store, result.run_id, "ask")
    first, second = (sqlite_store.get_run(e["run_id"]) for e in entries)
    assert first.finished_at is not None and first.finished_at <= second.created_at


def test_agent_calls_without_a_store(team: Path) -> None:
    """A run without a store: the callees run unstored, their replies still come back."""
    args = {"message": "hi", "match_all": ["reviewer"], "match_some": ["frontend"]}
    boss = _boss(team / "boss", [TAGS_TOOL], [{"call": TAGS_TOOL, "args": args}])
    runner = runner_for(boss, team, None)
    events: list[Any] = []

    async def main() -> None:
        async for event in runner.stream("go"):
            events.append(event)

    asyncio.run(main())
    (result,) = [e for e in events if type(e).__name__ == "ToolResultEvent" and e.tool == TAGS_TOOL]
    (entry,) = json.loads(result.output)
    assert (entry["agent_id"], entry["response"]) == ("rev_frontend", ["frontend ok"])
