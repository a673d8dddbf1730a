"""Each example agent end to end through the real CLI (`python -m engine run`), offline.

The scripted model replays each example's script.yaml; the run is persisted in a throwaway
SQLite file (TOOLFSM_DB), and the assertions read the store back, not just the console.
"""

from __future__ import annotations

from _example_cli import Cli, calls, notices


def test_screening_runs_to_the_interview(cli: Cli) -> None:
    out = cli("run", "examples/screening/agent.yaml").stdout
    snap = cli.last_run()
    run = snap.run
    assert (run.status, run.stop_reason, run.steps_count) == ("finished", "terminal_tool", 3)
    assert calls(snap) == [
        (0, "load_application", "finished"),
        (1, "check_requirements", "finished"),
        (2, "schedule_interview", "finished"),
    ]
    # Every step had one tool, forced.
    assert [(s.allowed, s.forced_tool) for s in snap.steps] == [
        (("load_application",), "load_application"),
        (("check_requirements",), "check_requirements"),
        (("schedule_interview",), "schedule_interview"),
    ]
    # The model asked for another role; the child rule's prefilled role replaced it.
    assert snap.calls[1].arguments == {"application_id": "A-1042", "role": "backend-engineer"}
    assert snap.calls[1].result is True
    assert "stopped: terminal_tool  3 step(s)" in out and run.id in out
    assert f"store: sqlite:///{cli.db}" in out


def test_support_pauses_for_approval_then_finishes_when_approved(cli: Cli) -> None:
    first = cli("run", "examples/support/agent.yaml")
    snap = cli.last_run()
    run = snap.run
    assert (run.status, run.stop_reason, run.steps_count) == (
        "awaiting_approval",
        "awaiting_approval",
        2,
    )
    # Step 0: refund before lookup_order is a violation, never executed, rule cited.
    violation = snap.calls[0]
    assert (violation.tool, violation.status, violation.step_seq) == ("refund", "violation", 0)
    assert "'refund' may only be called right after 'lookup_order'" in str(violation.result)
    assert "examples/support/agent.yaml:" in str(violation.result)
    assert "refund" not in snap.steps[0].allowed
    # Step 2 (not committed): the refund waits; the parent rule forced refund or exchange.
    assert calls(snap)[1:] == [(1, "lookup_order", "finished"), (2, "refund", "awaiting_approval")]
    short = run.id[:12]
    assert f"approve: toolfsm runs approve {short}" in first.stdout
    assert f"deny:    toolfsm runs deny {short} --reason TEXT" in first.stdout

    second = cli("runs", "approve", run.id[:8])
    assert "approved call_3 (refund)" in second.stdout
    snap = cli.last_run()
    run = snap.run
    assert (run.status, run.stop_reason, run.steps_count) == ("finished", "terminal_tool", 7)
    assert calls(snap) == [
        (0, "refund", "violation"),
        (1, "lookup_order", "finished"),
        (2, "refund", "finished"),
        (3, "send_reply", "finished"),
        (5, "log_interaction", "finished"),
        (6, "close_ticket", "finished"),
    ]
    assert snap.steps[2].allowed == ("refund", "exchange") and snap.steps[2].force
    assert snap.calls[2].result.startswith("Refund RF-5531 of 39.90 EUR")
    # Step 4: a reply without a tool call did not end the run: log_interaction was pending.
    assert (snap.steps[4].decision, snap.steps[4].reason) == ("continue", "required_before_exit")
    assert notices(snap) == [(4, "You must call these tools before ending: log_interaction.")]
    # Call ids go on after the resume instead of starting again at call_1.
    assert [c.call_id for c in snap.calls] == [f"call_{i}" for i in range(1, 7)]
    assert "stopped: terminal_tool  7 step(s)" in second.stdout


def test_support_denied_refund_never_runs_and_the_model_exchanges_instead(cli: Cli) -> None:
    cli(
        "run",
        "examples/support/agent.yaml",
        "--model",
        "scripted:examples/support/script-deny.yaml",
    )
    run = cli.last_run().run
    assert run.status == "awaiting_approval"

    reason = "Damage claims over 30 EUR need photos; offer an exchange."
    out = cli("runs", "deny", run.id, "--reason", reason).stdout
    assert "denied call_3 (refund)" in out
    snap = cli.last_run()
    assert (snap.run.status, snap.run.stop_reason) == ("finished", "terminal_tool")
    assert calls(snap) == [
        (0, "refund", "violation"),
        (1, "lookup_order", "finished"),
        (2, "refund", "denied"),
        (3, "exchange", "finished"),
        (4, "send_reply", "finished"),
        (5, "log_interaction", "finished"),
        (6, "close_ticket", "finished"),
    ]
    denied = snap.calls[2]
    assert denied.is_error and str(denied.result).endswith(reason)
    # The model read the reason as the refund's result.
    tool_texts = [m.content.get("text") for m in snap.messages if m.role == "tool"]
    assert any(str(t).endswith(reason) for t in tool_texts)
    # Nothing ran, so the run stayed right after lookup_order: refund or exchange, forced.
    assert (snap.steps[2].decision, snap.steps[2].reason) == ("continue", "no_call_executed")
    assert snap.steps[3].allowed == ("refund", "exchange") and snap.steps[3].force


def test_research_exhausts_its_searches_and_must_cite_before_answering(cli: Cli) -> None:
    out = cli("run", "examples/research/agent.yaml").stdout
    snap = cli.last_run()
    run = snap.run
    assert (run.status, run.stop_reason, run.steps_count) == ("finished", "terminal_tool", 9)
    searches = [(c.step_seq, str(c.status)) for c in snap.calls if c.tool == "search"]
    assert searches == [(0, "finished"), (1, "finished"), (3, "finished"), (4, "violation")]
    # After the third search, search is no longer offered; the fourth is rejected with the
    # max-calls rule cited.
    assert snap.steps[3].allowed == ("search", "fetch_page", "cite_sources", "answer")
    assert snap.steps[4].allowed == ("fetch_page", "cite_sources", "answer")
    rejected = snap.calls[5]
    assert rejected.tool == "search" and "its limit is 3" in str(rejected.result)
    assert "examples/research/agent.yaml:" in str(rejected.result)
    # Two pages in one reply.
    assert [(c.step_seq, c.batch_index) for c in snap.calls if c.step_seq == 2] == [(2, 0), (2, 1)]
    # answer before cite_sources: executed, but the run went on with a message.
    assert (snap.steps[6].decision, snap.steps[6].reason) == ("continue", "required_before_exit")
    assert notices(snap) == [(6, "You must call these tools before ending: cite_sources.")]
    # Heartbeat mode: cite_sources continued only because the model asked for it.
    assert (snap.steps[7].reason, snap.steps[8].reason) == ("heartbeat", "terminal_tool")
    assert [c.tool for c in snap.calls][-2:] == ["cite_sources", "answer"]
    assert "stopped: terminal_tool  9 step(s)" in out
