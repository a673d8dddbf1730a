"""The reusable rule files under `rules/` behave as their comments say (a happy path each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import Machine, compile_rules, load_rules
from engine.machine.trace import TraceStep, trace

RULES = Path(__file__).parent.parent / "rules"


def machine(name: str) -> Machine:
    return compile_rules(load_rules(RULES / f"{name}.yaml"))


def _rows(m: Machine, steps: list[str]) -> list[tuple[str | None, str | None, tuple[str, ...]]]:
    rows = trace(m, [TraceStep.parse(s) for s in steps])
    assert all(r.violation is None for r in rows), [r.violation for r in rows]
    return [(r.decision, r.reason, r.allowed) for r in rows]


def test_research_happy_path() -> None:
    m = machine("research")
    rows = _rows(
        m,
        [
            "web_search",
            "fetch_page",
            "search_papers",
            "cite_sources",
            "answer",  # log_outcome is still missing: the run goes on
            "log_outcome",
            "answer",
        ],
    )
    reasons = [r[1] for r in rows]
    assert reasons == [
        None,
        "rule_continues",  # max_calls keeps the run going
        "continue_rule",
        "continue_rule",
        "tool_call",
        "required_before_exit",
        "tool_call",
        "terminal_tool",
    ]
    assert rows[-1][0] == "stop"
    assert not any(r.force for r in trace(m, []))  # the model chooses freely


def test_research_web_search_budget() -> None:
    m = machine("research")
    rows = trace(m, [TraceStep("web_search")] * 6)
    assert "web_search" in rows[4].allowed and "web_search" not in rows[5].allowed
    assert rows[6].violation is not None and "web_search" in rows[6].violation


def test_support_happy_path_with_refund() -> None:
    m = machine("support")
    start = m.gate(m.start()).allowed
    assert "refund" not in start and "exchange" not in start
    rows = _rows(m, ["lookup_order", "refund", "reply", "log_interaction", "close_ticket"])
    assert rows[1][2] == ("refund", "exchange")  # forced: only the parent's children
    assert trace(m, [TraceStep("lookup_order")])[1].force
    assert rows[-1][:2] == ("stop", "terminal_tool")
    assert "refund" in m.approval
    assert "refund" not in rows[2][2]  # at most one refund, and only right after a lookup


def test_support_cannot_close_before_logging() -> None:
    m = machine("support")
    rows = _rows(m, ["order_status", "reply", "close_ticket"])
    assert rows[-1][:2] == ("continue", "required_before_exit")
    assert "log_interaction" in (trace(m, [TraceStep("close_ticket")])[1].message or "")


@pytest.mark.parametrize(
    ("verdict", "next_tool", "prefill"),
    [
        ("true", "send_email", {"template": "interview_invite"}),
        ("FALSE", "reject", {"notify": True}),
        ("maybe", "flag_for_review", None),
    ],
)
def test_screening_paths(verdict: str, next_tool: str, prefill: dict | None) -> None:
    m = machine("screening")
    start = m.gate(m.start())
    assert start.forced_tool == "retrieve_candidate"
    assert dict(start.prefill["retrieve_candidate"]) == {
        "fields": ["resume", "skills", "experience"]
    }
    position = m.advance(m.start(), "retrieve_candidate")
    assert m.gate(position).forced_tool == "evaluate_candidate"
    position = m.advance(position, "evaluate_candidate", verdict)
    gate = m.gate(position)
    assert gate.forced_tool == next_tool
    if prefill is None:
        assert next_tool not in gate.prefill
    else:
        assert dict(gate.prefill[next_tool]) == prefill
    position = m.advance(position, next_tool)
    verdict_after = m.after_call(position, next_tool)
    assert verdict_after.decision == "stop" and verdict_after.reason == "terminal_tool"
