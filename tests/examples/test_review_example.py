"""examples/review (issue 13): a supervisor and three reviewers, through the real CLI, offline.

Also an approval inside a callee: the caller waits (`awaiting_agents`) and approving the
callee resumes both."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from _example_cli import Cli

from engine.store import open_store


def test_review_runs_two_reviewers_concurrently_and_the_supervisor_decides(cli: Cli) -> None:
    out = cli("run", "examples/review/agent.yaml").stdout
    assert "stopped: terminal_tool  2 step(s)" in out
    store = open_store(str(cli.db))
    try:
        runs = store.list_runs()
        (boss,) = [r for r in runs if r.parent_run_id is None]
        assert boss.agent_name == "supervisor" and boss.stop_reason == "terminal_tool"
        snap = store.load_run(boss.id)
        ask, decision = snap.calls
        assert decision.tool == "request_changes"
        entries = json.loads(ask.result)
        assert [e["agent_id"] for e in entries] == ["backend_reviewer", "frontend_reviewer"]
        assert entries[1]["response"][0].startswith("Frontend: request changes.")
        callees = store.list_runs(parent=boss.id)
        assert sorted(r.agent_name for r in callees) == ["backend_reviewer", "frontend_reviewer"]
        assert all((r.parent_call_id, r.depth) == (ask.call_id, 1) for r in callees)
        # The reviewers ran at once: each one's run started before the other's stopped.
        first, second = callees
        assert first.finished_at is not None and second.finished_at is not None
        assert first.created_at < second.finished_at and second.created_at < first.finished_at
    finally:
        store.close()

    listed = cli("runs", "list").stdout.splitlines()
    rows = [line for line in listed if "reviewer" in line or "supervisor" in line]
    assert "supervisor" in rows[0] and all("└ " in row for row in rows[1:]) and len(rows) == 3
    records = json.loads(cli("runs", "list", "--json").stdout)
    assert sorted(r["parent_run_id"] or "" for r in records) == ["", boss.id, boss.id]

    shown = cli("runs", "show", boss.id[:10]).stdout
    assert shown.count("↳ callee run") == 2 and "agent backend_reviewer  finished" in shown
    child = cli("runs", "show", callees[0].id[:10]).stdout
    assert f"called by run {boss.id} (call {ask.call_id}), depth 1" in child


def _write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")


def test_approval_inside_a_callee_leaves_the_caller_waiting(cli: Cli, tmp_path: Path) -> None:
    root = tmp_path / "ops"
    _write(
        root,
        "agent.yaml",
        """\
        version: 1
        agent: boss
        tools: [send_message_to_agent_and_wait_for_reply, done]
        rules:
          - terminal: done
        run: {input: ship it}
        """,
    )
    _write(root, "tools.py", "def done() -> str:\n    return 'done'\n")
    _write(
        root,
        "script.yaml",
        """\
        replies:
          - call: send_message_to_agent_and_wait_for_reply
            args: {message: deploy it, other_agent_id: worker}
          - call: done
        """,
    )
    worker = root / "worker"
    _write(
        worker,
        "agent.yaml",
        "version: 1\nagent: worker\ntools: [deploy]\nrules:\n  - requires_approval: deploy\n",
    )
    _write(worker, "tools.py", "def deploy() -> str:\n    return 'deployed'\n")
    _write(worker, "script.yaml", "replies:\n  - call: deploy\n  - text: Deployed.\n")

    first = cli("run", str(root / "agent.yaml")).stdout
    store = open_store(str(cli.db))
    try:
        (boss,) = [r for r in store.list_runs() if r.parent_run_id is None]
        (child,) = store.list_runs(parent=boss.id)
        assert (boss.status, child.status) == ("awaiting_agents", "awaiting_approval")
    finally:
        store.close()
    assert "stopped: awaiting_agents" in first
    assert f"approve: toolfsm runs approve {child.id[:12]}" in first
    shown = cli("runs", "show", boss.id[:10]).stdout
    assert "status awaiting_agents" in shown
    assert f"waiting: callee run {child.id[:12]} (agent worker) is awaiting_approval" in shown

    second = cli("runs", "approve", child.id[:10]).stdout
    assert "approved call_1 (deploy)" in second and f"resuming caller run {boss.id}" in second
    store = open_store(str(cli.db))
    try:
        assert store.get_run(child.id).status == "finished"
        done = store.load_run(boss.id)
        assert done.run.status == "finished" and done.run.stop_reason == "terminal_tool"
        reply = json.loads(done.calls[0].result)
        assert reply["response"] == ["Deployed."] and reply["run_id"] == child.id
        # The approved deploy ran once.
        assert [c.status for c in store.load_run(child.id).calls] == ["finished"]
    finally:
        store.close()
