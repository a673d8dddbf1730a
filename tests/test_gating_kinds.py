"""Table-driven tests of each rule kind, alone and combined, against the reference semantics.

Each case is a rule file (tools + rules), a trace of calls, and what the compiled machine must
say at the start and after every call: the allowed tools (in declaration order, the project's
deliberate difference from the reference), forcing, and the continue/stop verdict.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

import pytest

from engine import Reason, StopReason, compile_rules, parse_rules
from engine.errors import UnknownToolError
from engine.machine import Machine, NotAllowedError
from engine.machine.trace import TraceStep, trace


def machine_of(tools: str, rules: str, *, extra: str = "") -> Machine:
    """Compile an agent with the given tool names (space separated) and rules YAML block."""
    tool_lines = "\n".join(f"  - {t}" for t in tools.split())
    body = textwrap.indent(textwrap.dedent(rules).strip("\n"), "  ") if rules.strip() else ""
    text = f"version: 1\nagent: t\ntools:\n{tool_lines}\n{extra}rules:\n{body or '  []'}\n"
    rule_file = parse_rules(text, "case.yaml")
    assert rule_file.ok, [str(d) for d in rule_file.diagnostics]
    return compile_rules(rule_file)


# A position's expectation: allowed tools (space separated, declaration order), forcing
# (False, True for "any allowed tool", or the forced tool's name), and the verdict after the
# call that led there ("continue reason" / "stop reason"; None at the start).
Expect = tuple[str, bool | str, str | None]


@dataclass
class Case:
    name: str
    tools: str
    rules: str
    steps: list[tuple[str | None, Any]]  # (tool, output); the first entry is the start (None)
    expect: list[Expect]
    heartbeat: list[bool | None] = field(default_factory=list)  # per step; empty = default mode


CASES = [
    Case(
        "no rules: everything allowed, any call continues",
        "a b c",
        "",
        [(None, None), ("b", None), ("b", None)],
        [("a b c", False, None), ("a b c", False, "continue tool_call")] * 1
        + [("a b c", False, "continue tool_call")],
    ),
    Case(
        "init, one tool: only it, forced by name; then everything",
        "a b c",
        "- init: b",
        [(None, None), ("b", None), ("a", None)],
        [
            ("b", "b", None),
            ("a b c", False, "continue tool_call"),
            ("a b c", False, "continue tool_call"),
        ],
    ),
    Case(
        "init, several tools (list and two rules): all of them, declaration order, forced",
        "a b c d",
        """
        - init: [d, b]
        - init: a
        """,
        [(None, None), ("d", None)],
        [("a b d", True, None), ("a b c d", False, "continue tool_call")],
    ),
    Case(
        "init ignores every other rule at the start",
        "a b c",
        """
        - init: c
        - only_after: a
          tools: c
        - max_calls: 2
          tools: c
        """,
        [(None, None), ("c", None), ("a", None)],
        [
            ("c", "c", None),
            ("a b", False, "continue rule_continues"),
            ("c", "c", "continue tool_call"),
        ],
    ),
    Case(
        "child: after the tool only its children, forced; elsewhere no restriction",
        "a b c d",
        """
        - after: a
          allow: [d, b]
        """,
        [(None, None), ("c", None), ("a", None), ("d", None)],
        [
            ("a b c d", False, None),
            ("a b c d", False, "continue tool_call"),
            ("b d", True, "continue rule_continues"),
            ("a b c d", False, "continue tool_call"),
        ],
    ),
    Case(
        "child: one child is forced by name",
        "a b c",
        """
        - after: a
          allow: c
        """,
        [(None, None), ("a", None)],
        [("a b c", False, None), ("c", "c", "continue rule_continues")],
    ),
    Case(
        "two child rules on one tool intersect",
        "a b c d",
        """
        - after: a
          allow: [b, c]
        - after: a
          allow: [c, d]
        """,
        [(None, None), ("a", None)],
        [("a b c d", False, None), ("c", "c", "continue rule_continues")],
    ),
    Case(
        "parent: children only right after the parent (forced there), never elsewhere",
        "a b c d",
        """
        - only_after: a
          tools: [c, b]
        """,
        [(None, None), ("a", None), ("b", None), ("d", None)],
        [
            ("a d", False, None),
            ("b c", True, "continue tool_call"),
            ("a d", False, "continue tool_call"),
            ("a d", False, "continue tool_call"),
        ],
    ),
    Case(
        "parent and child on the same tool intersect",
        "a b c d",
        """
        - only_after: a
          tools: [b, c]
        - after: a
          allow: [c, d]
        """,
        [(None, None), ("a", None)],
        [("a d", False, None), ("c", "c", "continue rule_continues")],
    ),
    Case(
        "a parent's children are excluded after another tool's child rule",
        "a b c d",
        """
        - only_after: a
          tools: b
        - after: c
          allow: [b, d]
        """,
        [(None, None), ("c", None)],
        [("a c d", False, None), ("d", "d", "continue rule_continues")],
    ),
    Case(
        "conditional: the matching case's tool only, forced; a case tool then frees the run",
        "a yes no other",
        """
        - after: a
          on_output: {true: "yes", false: "no"}
        """,
        [(None, None), ("a", "true"), ("yes", None), ("a", "False"), ("no", None), ("a", "1")],
        [
            ("a yes no other", False, None),
            ("yes", "yes", "continue rule_continues"),
            ("a yes no other", False, "continue tool_call"),
            ("no", "no", "continue rule_continues"),
            ("a yes no other", False, "continue tool_call"),
            # no case matches, no default, not strict: no restriction, still forced
            ("a yes no other", True, "continue rule_continues"),
        ],
    ),
    Case(
        "conditional, strict: no match is a dead end (never 'all tools')",
        "a b c",
        """
        - after: a
          on_output: {ok: b}
          strict: true
        """,
        [(None, None), ("a", "ok"), ("b", None), ("a", "nope")],
        [
            ("a b c", False, None),
            ("b", "b", "continue rule_continues"),
            ("a b c", False, "continue tool_call"),
            ("", True, "stop dead_end"),
        ],
    ),
    Case(
        "conditional and child on one tool intersect",
        "a b c d",
        """
        - after: a
          allow: [b, c]
        - after: a
          on_output: {x: c}
        """,
        [(None, None), ("a", "x"), ("c", None), ("a", "y")],
        [
            ("a b c d", False, None),
            ("c", "c", "continue rule_continues"),
            ("a b c d", False, "continue tool_call"),
            ("b c", True, "continue rule_continues"),
        ],
    ),
    Case(
        "max_calls: the tool disappears at its limit; calling it continues the run",
        "a b",
        """
        - max_calls: 2
          tools: a
        """,
        [(None, None), ("a", None), ("b", None), ("a", None), ("b", None)],
        [
            ("a b", False, None),
            ("a b", False, "continue rule_continues"),
            ("a b", False, "continue tool_call"),
            ("b", False, "continue rule_continues"),
            ("b", False, "continue tool_call"),
        ],
    ),
    Case(
        "max_calls: two limits on one tool, the smallest binds",
        "a b",
        """
        - max_calls: 3
          tools: [a, b]
        - max_calls: 1
          tools: a
        """,
        [(None, None), ("a", None), ("b", None)],
        [
            ("a b", False, None),
            ("b", False, "continue rule_continues"),
            ("b", False, "continue rule_continues"),
        ],
    ),
    Case(
        "max_calls exhausted under a child rule: dead end, the run stops",
        "a b",
        """
        - after: a
          allow: a
        - max_calls: 2
          tools: a
        """,
        [(None, None), ("a", None), ("a", None)],
        [
            ("a b", False, None),
            ("a", "a", "continue rule_continues"),
            ("", True, "stop dead_end"),
        ],
    ),
    Case(
        "max_calls narrows a forced set to one: the survivor is named",
        "a b c",
        """
        - after: a
          allow: [a, b]
        - max_calls: 1
          tools: a
        """,
        [(None, None), ("a", None)],
        [("a b c", False, None), ("b", "b", "continue rule_continues")],
    ),
    Case(
        "terminal: the run stops after it; it does not change the allowed set",
        "a b",
        "- terminal: b",
        [(None, None), ("a", None), ("b", None)],
        [
            ("a b", False, None),
            ("a b", False, "continue tool_call"),
            ("a b", False, "stop terminal_tool"),
        ],
    ),
    Case(
        "continue: the run goes on (reason continue_rule)",
        "a b",
        "- continue: a",
        [(None, None), ("a", None), ("b", None)],
        [
            ("a b", False, None),
            ("a b", False, "continue continue_rule"),
            ("a b", False, "continue tool_call"),
        ],
    ),
    Case(
        "required_before_exit: a terminal call continues while required tools are missing",
        "a log done",
        """
        - terminal: done
        - required_before_exit: log
        """,
        [(None, None), ("done", None), ("log", None), ("done", None)],
        [
            ("a log done", False, None),
            ("a log done", False, "continue required_before_exit"),
            ("a log done", False, "continue tool_call"),
            ("a log done", False, "stop terminal_tool"),
        ],
    ),
    Case(
        "requires_approval never changes the allowed set or the verdict",
        "a b",
        "- requires_approval: a",
        [(None, None), ("a", None)],
        [("a b", False, None), ("a b", False, "continue tool_call")],
    ),
    Case(
        "heartbeat mode: plain tools continue only when asked to",
        "a b c",
        """
        - continue: c
        - after: b
          allow: a
        """,
        [(None, None), ("a", None), ("a", None), ("c", None), ("b", None), ("a", None)],
        [
            ("a b c", False, None),
            ("a b c", False, "continue heartbeat"),
            ("a b c", False, "stop no_heartbeat"),
            ("a b c", False, "continue continue_rule"),
            ("a", "a", "continue rule_continues"),
            ("a b c", False, "stop no_heartbeat"),
        ],
        heartbeat=[True, False, False, False, False],
    ),
    Case(
        "heartbeat mode: a stop without heartbeat still waits for required tools",
        "a log",
        "- required_before_exit: log",
        [(None, None), ("a", None), ("log", None)],
        [
            ("a log", False, None),
            ("a log", False, "continue required_before_exit"),
            ("a log", False, "stop no_heartbeat"),
        ],
        heartbeat=[False, False],
    ),
    Case(
        "terminal beats the rule that would continue (terminal is checked first)",
        "a b",
        """
        - terminal: a
        - max_calls: 5
          tools: a
        """,
        [(None, None), ("a", None)],
        [("a b", False, None), ("a b", False, "stop terminal_tool")],
    ),
]


# Output matching (engine/language/outputs.py): (on_output YAML, default, output, the tool allowed next).
# Boolean keys: "true"/"false" in any case, white space ignored. Number keys: numeric equality.
# String keys: exact text. No match: the default, else every tool (still forced).
OUTPUT_CASES = [
    ("{true: t, false: f}", None, "true", "t"),
    ("{true: t, false: f}", None, "TRUE", "t"),
    ("{true: t, false: f}", None, " False\n", "f"),
    ("{true: t, false: f}", None, "1", None),
    ("{true: t, false: f}", None, "yes", None),
    ("{true: t, false: f}", None, True, "t"),
    ("{true: t, false: f}", None, False, "f"),
    ("{1: t, 0.5: f}", "d", "1", "t"),
    ("{1: t, 0.5: f}", "d", "1.0", "t"),
    ("{1: t, 0.5: f}", "d", " 1 ", "t"),
    ("{1: t, 0.5: f}", "d", "1e0", "t"),
    ("{1: t, 0.5: f}", "d", "0.50", "f"),
    ("{1: t, 0.5: f}", "d", 1, "t"),
    ("{1: t, 0.5: f}", "d", "one", "d"),
    ("{1: t, 0.5: f}", "d", "1.5", "d"),
    ('{"True": t, "billing": f}', "d", "True", "t"),
    ('{"True": t, "billing": f}', "d", "true", "d"),
    ('{"True": t, "billing": f}', "d", True, "d"),  # True becomes the text "true"
    ('{"True": t, "billing": f}', "d", "billing", "f"),
    ('{"True": t, "billing": f}', "d", "Billing", "d"),
    ('{"True": t, "billing": f}', "d", "billing ", "d"),
    ('{"1": t, 1: f}', "d", "1", "t"),  # first matching key wins
    ('{"1": t, 1: f}', "d", "1.0", "f"),
    ("{yes: t, on: f}", "d", "yes", "t"),  # YAML 1.2: yes/on are strings, not booleans
    ("{yes: t, on: f}", "d", "true", "d"),
    ('{"null": t}', "d", None, "t"),  # a None output is the text "null"
]


@pytest.mark.parametrize(("cases", "default", "output", "expected"), OUTPUT_CASES)
def test_output_case_matching(
    cases: str, default: str | None, output: Any, expected: str | None
) -> None:
    rules = f"- after: a\n  on_output: {cases}\n" + (f"  default: {default}\n" if default else "")
    machine = machine_of("a t f d", rules)
    gate = machine.gate(machine.advance(machine.start(), "a", output))
    assert gate.force
    if expected is None:
        assert gate.allowed == machine.tools and gate.forced_tool is None
    else:
        assert gate.allowed == (expected,) and gate.forced_tool == expected


def _verdict_text(verdict: Any) -> str:
    return f"{verdict.decision} {verdict.reason}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rule_kind_table(case: Case) -> None:
    machine = machine_of(case.tools, case.rules)
    assert len(case.steps) == len(case.expect)
    position = machine.start()
    for number, ((tool, output), (allowed, force, verdict)) in enumerate(
        zip(case.steps, case.expect, strict=True)
    ):
        if tool is not None:
            position = machine.advance(position, tool, output)
            heartbeat = case.heartbeat[number - 1] if case.heartbeat else None
            got = machine.after_call(position, tool, heartbeat=heartbeat)
            assert _verdict_text(got) == verdict, f"verdict after step {number} ({tool})"
        gate = machine.gate(position)
        where = f"position {number} (after {tool!r})"
        assert gate.allowed == tuple(allowed.split()), where
        assert gate.dead_end is (not allowed), where
        assert gate.force is bool(force), where
        assert gate.forced_tool == (force if isinstance(force, str) else None), where
        assert gate.mask == sum(1 << machine.tool_index[t] for t in gate.allowed), where
        for name in machine.tools:
            assert machine.is_allowed(position, name) is (name in gate.allowed), where


def test_dead_end_verdict_has_dead_end_stop_reason() -> None:
    machine = machine_of(
        "a b",
        """
        - after: a
          on_output: {ok: b}
          strict: true
        """,
    )
    position = machine.advance(machine.start(), "a", "not ok")
    assert machine.gate(position).allowed == ()
    verdict = machine.after_call(position, "a")
    assert not verdict.continues
    assert verdict.reason is Reason.DEAD_END
    assert verdict.stop_reason is StopReason.DEAD_END
    assert verdict.decision == "stop"
    # A text reply at a dead end simply ends the turn (nothing is pending).
    assert machine.after_text(position).stop_reason is StopReason.END_TURN


def test_required_before_exit_after_text_names_missing_tools() -> None:
    machine = machine_of(
        "a log cite done",
        """
        - required_before_exit: [cite, log]
        - terminal: done
        """,
    )
    start = machine.start()
    verdict = machine.after_text(start)
    assert verdict.continues
    assert verdict.reason is Reason.REQUIRED_BEFORE_EXIT
    assert verdict.stop_reason is None
    # Pending tools are named in declaration order.
    assert machine.pending_required(start) == ("log", "cite")
    assert "log, cite" in (verdict.message or "")
    position = machine.advance(start, "cite")
    verdict = machine.after_call(machine.advance(position, "done"), "done")
    assert verdict.continues and verdict.reason is Reason.REQUIRED_BEFORE_EXIT
    assert "log" in (verdict.message or "") and "cite" not in (verdict.message or "")
    position = machine.advance(position, "log")
    assert machine.pending_required(position) == ()
    text = machine.after_text(position)
    assert not text.continues and text.reason is Reason.END_TURN
    assert text.stop_reason is StopReason.END_TURN
    done = machine.after_call(machine.advance(position, "done"), "done")
    assert done.stop_reason is StopReason.TERMINAL_TOOL


def test_required_before_exit_cannot_continue_into_a_dead_end() -> None:
    machine = machine_of(
        "a log b",
        """
        - required_before_exit: log
        - after: a
          on_output: {x: b}
          strict: true
        """,
    )
    position = machine.advance(machine.start(), "a", "y")
    verdict = machine.after_text(position)
    assert verdict.reason is Reason.DEAD_END and verdict.stop_reason is StopReason.DEAD_END


def test_no_heartbeat_stop_maps_to_end_turn() -> None:
    machine = machine_of("a", "")
    position = machine.advance(machine.start(), "a")
    verdict = machine.after_call(position, "a", heartbeat=False)
    assert verdict.reason is Reason.NO_HEARTBEAT
    assert verdict.stop_reason is StopReason.END_TURN


def test_prefilled_args_init_and_child_later_rule_wins_key_by_key() -> None:
    machine = machine_of(
        "a b c",
        """
        - init: a
          args: {x: 1, y: 2}
        - after: a
          allow: [b, c]
          args:
            b: {p: first, q: kept}
        - after: a
          allow: [b, c]
          args:
            b: {p: second}
            c: {r: [1, 2]}
        """,
    )
    start = machine.start()
    assert machine.gate(start).prefill == {"a": {"x": 1, "y": 2}}
    position = machine.advance(start, "a")
    prefill = machine.gate(position).prefill
    assert {t: dict(a) for t, a in prefill.items()} == {
        "b": {"p": "second", "q": "kept"},
        "c": {"r": [1, 2]},
    }
    # Prefills apply only right after the parent: nowhere else.
    assert dict(machine.gate(machine.advance(position, "b")).prefill) == {}


def test_prefill_survives_max_calls_narrowing() -> None:
    machine = machine_of(
        "a b c",
        """
        - after: a
          allow: [a, b]
          args:
            b: {k: v}
        - max_calls: 1
          tools: a
        """,
    )
    position = machine.advance(machine.start(), "a")
    gate = machine.gate(position)
    assert gate.allowed == ("b",) and gate.forced_tool == "b"
    assert dict(gate.prefill["b"]) == {"k": "v"}


def test_violations_raise_and_do_not_enter_history() -> None:
    machine = machine_of(
        "a b c",
        """
        - after: a
          allow: b
        - max_calls: 1
          tools: a
        """,
    )
    position = machine.advance(machine.start(), "a")
    with pytest.raises(NotAllowedError) as info:
        machine.advance(position, "c")
    assert info.value.allowed == ("b",)
    assert "'c' is not allowed" in str(info.value)
    with pytest.raises(UnknownToolError):
        machine.advance(position, "nope")
    rows = trace(machine, [TraceStep("a"), TraceStep("c"), TraceStep("b"), TraceStep("a")])
    assert [r.violation is not None for r in rows] == [False, False, True, False, True]
    violation = rows[2]
    assert violation.reason == "violation" and violation.decision == "continue"
    assert violation.position == rows[1].position  # the violating call changed nothing
    assert "allowed: b" in (violation.violation or "")
    assert "case.yaml:" in (violation.violation or "")  # names the forbidding rule's location
    # 'a' was called once (limit 1): the second attempt is a violation too.
    assert rows[4].position == rows[3].position


def test_position_dump_load_round_trip() -> None:
    machine = machine_of(
        "a b log",
        """
        - max_calls: 3
          tools: a
        - required_before_exit: log
        - after: a
          on_output: {1: b}
        """,
    )
    position = machine.advance(machine.start(), "log")
    position = machine.advance(position, "a", "1")
    data = machine.dump(position)
    assert data == {"node": "after:a=1", "counts": {"a": 1}, "required_called": ["log"]}
    assert machine.load(data) == position


def test_allowed_order_is_declaration_order_not_rule_order() -> None:
    machine = machine_of(
        "z y x w",
        """
        - after: z
          allow: [w, x, y]
        """,
    )
    position = machine.advance(machine.start(), "z")
    assert machine.gate(position).allowed == ("y", "x", "w")
