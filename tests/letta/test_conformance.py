"""Conformance with the reference semantics, case by case, through import + the compiled machine.

Each case is Letta-format rules (JSON, as Letta stores them) for an agent with some tools, and a
script: `At(...)` states the allowed tools / forcing / prefill / text-reply decision at the
current position, `Call(...)` calls a tool (with its output) and states the decision after it
("violation" = not allowed: not executed, not in the history). Every case runs twice: through
`toolfsm import` and the compiled machine, and through the naive interpreter of
`reference.py` (so the table also checks the interpreter the property tests rely on).

Where toolfsm deliberately differs from Letta, the case carries `deviation=` naming the item of
README.md "Migrating from Letta" -> "Differences from Letta", and `At(letta=[...])` records what
Letta itself would offer (checked against the interpreter in Letta mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from .reference import LettaRun, import_machine

DEAD_END = "README 'Differences from Letta': dead end instead of the all-tools fallback"
ORDER = "README 'Differences from Letta': stable tool order"


# -- Letta rule constructors (the JSON objects Letta stores) ------------------------------


def first(tool: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"tool_name": tool, "type": "run_first", "args": args, "prompt_template": None}


def child(
    tool: str, *children: str, args: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    nodes = [{"name": name, "args": a} for name, a in (args or {}).items()]
    rule = {"tool_name": tool, "type": "constrain_child_tools", "children": list(children)}
    return {**rule, "child_arg_nodes": nodes or None, "prompt_template": None}


def parent(tool: str, *children: str) -> dict[str, Any]:
    return {"tool_name": tool, "type": "parent_last_tool", "children": list(children)}


def cond(
    tool: str, mapping: dict[str, str], default: str | None = None, require: bool = False
) -> dict[str, Any]:
    return {
        "tool_name": tool,
        "type": "conditional",
        "child_output_mapping": mapping,
        "default_child": default,
        "require_output_mapping": require,
        "prompt_template": None,
    }


def flag(kind: str, tool: str) -> dict[str, Any]:
    return {"tool_name": tool, "type": kind, "prompt_template": None}


def max_count(tool: str, limit: int) -> dict[str, Any]:
    return {"tool_name": tool, "type": "max_count_per_step", "max_count_limit": limit}


# -- scripts -----------------------------------------------------------------------------


@dataclass
class At:
    allowed: list[str]
    force: bool = False
    forced: str | None = None
    prefill: dict[str, dict[str, Any]] = field(default_factory=dict)
    text: str | None = None  # decision if the model replied with text here
    letta: list[str] | None = None  # what Letta itself offers, when toolfsm deliberately differs


@dataclass
class Call:
    tool: str
    output: str | None = None
    then: str = "continue"  # "continue" | "stop" | "violation"
    heartbeat: bool | None = None  # None: the default loop; True/False: request_heartbeat


@dataclass
class Case:
    name: str
    tools: list[str]
    rules: list[dict[str, Any]]
    script: list[At | Call]
    deviation: str | None = None


TOOLS = ["a", "b", "c", "d"]

CASES = [
    # each kind alone
    Case(
        "no rules: every tool, nothing forced",
        TOOLS,
        [],
        [At(TOOLS, text="stop"), Call("c"), At(TOOLS)],
    ),
    Case(
        "run_first: only the init tool, forced",
        TOOLS,
        [first("a")],
        [At(["a"], force=True, forced="a"), Call("a"), At(TOOLS)],
    ),
    Case(
        "run_first on several tools: all of them, forced, none named",
        TOOLS,
        [first("b"), first("a")],
        [At(["a", "b"], force=True), Call("b"), At(TOOLS)],
    ),
    Case(
        "run_first: a call outside the init tools is a violation",
        TOOLS,
        [first("a")],
        [Call("b", then="violation"), At(["a"], force=True, forced="a"), Call("a")],
    ),
    Case(
        "run_first with args: prefilled on the first call only",
        TOOLS,
        [first("a", {"q": "x"})],
        [At(["a"], True, "a", {"a": {"q": "x"}}), Call("a"), At(TOOLS)],
    ),
    Case(
        "constrain_child_tools: after the tool only the children, forced",
        TOOLS,
        [child("a", "b", "c")],
        [At(TOOLS), Call("a"), At(["b", "c"], force=True), Call("b"), At(TOOLS)],
    ),
    Case(
        "constrain_child_tools: one child is named",
        TOOLS,
        [child("a", "c")],
        [
            Call("a"),
            At(["c"], force=True, forced="c"),
            Call("d", then="violation"),
            At(["c"], force=True, forced="c"),
        ],
    ),
    Case(
        "constrain_child_tools with child_arg_nodes: prefilled right after the parent",
        TOOLS,
        [child("a", "b", "c", args={"b": {"k": 1}})],
        [At(TOOLS), Call("a"), At(["b", "c"], True, None, {"b": {"k": 1}}), Call("b"), At(TOOLS)],
    ),
    Case(
        "parent_last_tool: the children only right after the parent",
        TOOLS,
        [parent("a", "b")],
        [
            At(["a", "c", "d"]),
            Call("b", then="violation"),
            Call("a"),
            At(["b"], force=True, forced="b"),
            Call("b"),
            At(["a", "c", "d"]),
            Call("c"),
            At(["a", "c", "d"]),
        ],
    ),
    Case(
        "conditional: string key 'true' matches the output 'true'",
        TOOLS,
        [cond("a", {"true": "b", "false": "c"})],
        [
            Call("a", "true"),
            At(["b"], force=True, forced="b"),
            Call("b"),
            Call("a", "false"),
            At(["c"], force=True, forced="c"),
        ],
    ),
    Case(
        "conditional: string key 'true' does not match 'True' (exact string)",
        TOOLS,
        [cond("a", {"true": "b"})],
        [Call("a", "True"), At(TOOLS, force=True)],
    ),
    Case(
        "conditional: string key '1' does not match '1.0' or ' 1'",
        TOOLS,
        [cond("a", {"1": "b"})],
        [
            Call("a", "1.0"),
            At(TOOLS, force=True),
            Call("a", " 1"),
            At(TOOLS, force=True),
            Call("a", "1"),
            At(["b"], force=True, forced="b"),
        ],
    ),
    Case(
        "conditional: keys 'yes', 'on', 'null' stay strings",
        TOOLS,
        [cond("a", {"yes": "b", "on": "c", "null": "d"})],
        [
            Call("a", "on"),
            At(["c"], True, "c"),
            Call("c"),
            Call("a", "null"),
            At(["d"], True, "d"),
            Call("d"),
            Call("a", "yes"),
            At(["b"], True, "b"),
        ],
    ),
    Case(
        "conditional: no match uses default_child",
        TOOLS,
        [cond("a", {"x": "b"}, default="d")],
        [Call("a", "y"), At(["d"], True, "d"), Call("d"), At(TOOLS)],
    ),
    Case(
        "conditional: no match, no default, not required: every tool (still forced)",
        TOOLS,
        [cond("a", {"x": "b"})],
        [Call("a", "y"), At(TOOLS, force=True)],
    ),
    Case(
        "conditional: require_output_mapping, no match: nothing",
        TOOLS,
        [cond("a", {"x": "b"}, require=True)],
        [Call("a", "y", then="stop"), At([], force=True, letta=TOOLS, text="stop")],
        deviation=DEAD_END,
    ),
    Case(
        "conditional: require_output_mapping beats default_child on no match",
        TOOLS,
        [cond("a", {"x": "b"}, default="c", require=True)],
        [
            Call("a", "x"),
            At(["b"], True, "b"),
            Call("b"),
            Call("a", "zz", then="stop"),
            At([], force=True, letta=TOOLS),
        ],
        deviation=DEAD_END,
    ),
    Case(
        "max_count_per_step: the tool is removed once it reached the limit",
        TOOLS,
        [max_count("a", 2)],
        [
            At(TOOLS),
            Call("a"),
            At(TOOLS),
            Call("a"),
            At(["b", "c", "d"]),
            Call("a", then="violation"),
            Call("b"),
            At(["b", "c", "d"]),
        ],
    ),
    Case(
        "exit_loop: the run stops after the tool",
        TOOLS,
        [flag("exit_loop", "d")],
        [At(TOOLS), Call("a"), Call("d", then="stop")],
    ),
    Case(
        "continue_loop: goes on even without a heartbeat",
        TOOLS,
        [flag("continue_loop", "a")],
        [Call("a", heartbeat=False), Call("b", heartbeat=False, then="stop")],
    ),
    Case(
        "heartbeat loop: a plain tool goes on only when the model asks",
        TOOLS,
        [],
        [Call("a", heartbeat=True), Call("b", heartbeat=False, then="stop")],
    ),
    Case(
        "required_before_exit: a text reply goes on until the tool was called",
        TOOLS,
        [flag("required_before_exit", "c")],
        [
            At(TOOLS, text="continue"),
            Call("a"),
            At(TOOLS, text="continue"),
            Call("c"),
            At(TOOLS, text="stop"),
        ],
    ),
    Case(
        "requires_approval: no effect on the allowed set or the loop",
        TOOLS,
        [flag("requires_approval", "b")],
        [At(TOOLS), Call("b"), At(TOOLS, text="stop")],
    ),
    # kinds combined
    Case(
        "rule tools continue the loop: child, conditional and max-count, not parent",
        TOOLS,
        [child("a", "b", "c", "d"), cond("b", {"x": "a"}), max_count("c", 5), parent("d", "c")],
        [
            Call("d", heartbeat=False, then="stop"),
            Call("c", heartbeat=False),
            Call("a", heartbeat=False),
            Call("b", "x", heartbeat=False),
            Call("a", heartbeat=False),
            Call("d", heartbeat=False, then="stop"),
        ],
    ),
    Case(
        "init wins at the start over a parent rule",
        TOOLS,
        [first("b"), parent("a", "b")],
        [At(["b"], True, "b"), Call("b"), At(["a", "c", "d"]), Call("a"), At(["b"], True, "b")],
    ),
    Case(
        "two child rules on one tool: their intersection",
        TOOLS,
        [child("a", "b", "c"), child("a", "c", "d")],
        [Call("a"), At(["c"], True, "c")],
    ),
    Case(
        "child and parent on one tool: intersection, other parents' children excluded",
        TOOLS,
        [child("a", "b", "c"), parent("a", "b"), parent("d", "c")],
        [Call("a"), At(["b"], True, "b")],
    ),
    Case(
        "child + conditional on the same tool: the case picks among the children",
        TOOLS,
        [child("a", "b", "c"), cond("a", {"x": "b", "y": "c"})],
        [Call("a", "y"), At(["c"], True, "c"), Call("c"), Call("a", "?"), At(["b", "c"], True)],
    ),
    Case(
        "max-count exhausted while the child rule allows only it: dead end",
        TOOLS,
        [child("a", "a"), max_count("a", 1)],
        [Call("a", then="stop"), At([], force=True, letta=TOOLS)],
        deviation=DEAD_END,
    ),
    Case(
        "max-count does not force, and stays exhausted",
        TOOLS,
        [max_count("b", 1)],
        [Call("b"), At(["a", "c", "d"]), Call("a"), At(["a", "c", "d"])],
    ),
    Case(
        "terminal with a required tool uncalled: goes on, then stops",
        TOOLS,
        [flag("exit_loop", "d"), flag("required_before_exit", "b")],
        [Call("d"), At(TOOLS, text="continue"), Call("b"), Call("d", then="stop")],
    ),
    Case(
        "terminal beats continue on the same tool (continue is dropped on import)",
        TOOLS,
        [flag("continue_loop", "d"), flag("exit_loop", "d")],
        [Call("d", then="stop")],
    ),
    Case(
        "terminal beats a child rule on the same tool",
        TOOLS,
        [child("d", "a"), flag("exit_loop", "d")],
        [Call("d", then="stop")],
    ),
    Case(
        "two child rules prefilling one tool: the later wins key by key",
        TOOLS,
        [child("a", "b", args={"b": {"x": 1, "y": 1}}), child("a", "b", args={"b": {"y": 2}})],
        [Call("a"), At(["b"], True, "b", {"b": {"x": 1, "y": 2}})],
    ),
    Case(
        "a violation does not enter the history (the conditional output stays)",
        TOOLS,
        [cond("a", {"go": "b"}), max_count("c", 1)],
        [
            Call("a", "go"),
            Call("c", then="violation"),
            At(["b"], True, "b"),
            Call("b"),
            Call("c"),
            Call("c", then="violation"),
            At(["a", "b", "d"]),
        ],
    ),
    Case(
        "stable order: children listed in reverse come back in declaration order",
        TOOLS,
        [child("a", "d", "c", "b")],
        [Call("a"), At(["b", "c", "d"], force=True)],
        deviation=ORDER,
    ),
    Case(
        "a full support flow",
        ["lookup", "check", "refund", "reply", "escalate"],
        [
            first("lookup", {"verbose": True}),
            child("lookup", "check", "reply"),
            cond("check", {"true": "refund", "false": "reply"}, default="escalate"),
            max_count("refund", 1),
            flag("exit_loop", "reply"),
            flag("exit_loop", "escalate"),
            flag("required_before_exit", "lookup"),
            flag("requires_approval", "refund"),
        ],
        [
            At(["lookup"], True, "lookup", {"lookup": {"verbose": True}}, text="continue"),
            Call("lookup"),
            At(["check", "reply"], True),
            Call("check", "true"),
            At(["refund"], True, "refund"),
            Call("refund"),
            At(["lookup", "check", "reply", "escalate"], text="stop"),
            Call("check", "TRUE"),
            At(["escalate"], True, "escalate"),
            Call("escalate", then="stop"),
        ],
    ),
]


def _run_machine(case: Case) -> None:
    imported, machine = import_machine(case.tools, case.rules, "conformance")
    assert not imported.lossy, imported.translation.skipped
    position = machine.start()
    for step in case.script:
        if isinstance(step, At):
            gate = machine.gate(position)
            assert list(gate.allowed) == step.allowed
            assert gate.force == step.force
            assert gate.forced_tool == step.forced
            assert {t: dict(a) for t, a in gate.prefill.items()} == step.prefill
            if step.text is not None:
                assert machine.after_text(position).decision == step.text
            continue
        if step.then == "violation":
            assert not machine.is_allowed(position, step.tool)
            continue
        position = machine.advance(position, step.tool, step.output)
        verdict = machine.after_call(position, step.tool, heartbeat=step.heartbeat)
        assert verdict.decision == step.then, verdict


def _run_reference(case: Case, letta_fallback: bool) -> None:
    run = LettaRun(case.tools, case.rules, letta_fallback=letta_fallback)
    for step in case.script:
        if isinstance(step, At):
            expected = step.letta if letta_fallback and step.letta is not None else step.allowed
            assert run.allowed() == expected
            assert run.forced() == step.force
            assert run.prefill() == step.prefill
            if step.text is not None and not letta_fallback:
                assert run.after_text() == step.text
            continue
        assert run.call(step.tool, step.output) == (step.then != "violation")
        if step.then != "violation" and not letta_fallback:
            assert run.after_call(step.tool, step.heartbeat) == step.then


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_imported_machine_follows_the_reference(case: Case) -> None:
    _run_machine(case)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reference_interpreter_agrees_with_the_table(case: Case) -> None:
    _run_reference(case, letta_fallback=False)


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.deviation == DEAD_END], ids=lambda c: c.name
)
def test_letta_itself_would_offer_every_tool_at_these_dead_ends(case: Case) -> None:
    assert any(isinstance(s, At) and s.letta for s in case.script)
    _run_reference(case, letta_fallback=True)


def test_every_rule_kind_is_covered() -> None:
    kinds = {r["type"] for c in CASES for r in c.rules}
    assert kinds == {
        "run_first",
        "constrain_child_tools",
        "parent_last_tool",
        "conditional",
        "exit_loop",
        "continue_loop",
        "max_count_per_step",
        "required_before_exit",
        "requires_approval",
    }


# -- what toolfsm refuses to import as-is (each becomes a comment and a lossy exit) -------

REJECTED = [
    ("a rule naming a tool the agent lacks", [child("a", "zz")], "which the agent does not have"),
    (
        "two conditional rules on one tool",
        [cond("a", {"x": "b"}), cond("a", {"y": "c"})],
        "second conditional rule",
    ),
    ("max_count_limit 0", [max_count("a", 0)], "max_count_limit 0"),
    (
        "child rules on one tool with nothing in common",
        [child("a", "b"), child("a", "c")],
        "dead end",
    ),
    (
        "a tool that is the child of two parents",
        [parent("a", "c"), parent("b", "c")],
        "child of two parent rules",
    ),
    (
        "a conditional case the child rule forbids",
        [child("a", "b"), cond("a", {"x": "c"})],
        "other rules forbid",
    ),
    ("an unknown rule type", [{"tool_name": "a", "type": "run_last"}], "unknown rule type"),
    ("a child rule without children", [child("a")], "no children"),
]


@pytest.mark.parametrize(("name", "rules", "reason"), REJECTED, ids=[r[0] for r in REJECTED])
def test_unrepresentable_rules_are_skipped_with_a_reason(
    name: str, rules: list[dict[str, Any]], reason: str
) -> None:
    imported, _machine = import_machine(TOOLS, rules, "rejected")
    assert imported.lossy
    reasons = " | ".join(s.reason for s in imported.translation.skipped)
    assert reason in reasons
    assert "NOT TRANSLATED" in imported.text
