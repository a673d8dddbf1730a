"""Property test: the compiled machine agrees with a naive interpreter of the reference text.

The interpreter below is deliberately simple-minded: at every step it rescans the whole call
history and every rule, exactly as `reference-semantics.md` describes one step (with the
project's documented differences: declaration order, answer-only or dead end instead of "all
tools",
required-before-exit on every stop, output matching by key type). It shares no code with the
compiler or the machine, only the parsed spec.
"""

from __future__ import annotations

import math
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine import Reason, compile_rules, parse_rules
from engine.errors import UnknownToolError
from engine.language import spec
from engine.machine import NotAllowedError

History = list[tuple[str, Any]]

# -- the naive interpreter ------------------------------------------------------------


def _text(output: Any) -> str:
    if output is None:
        return "null"
    if isinstance(output, bool):
        return "true" if output else "false"
    return str(output)


def _key_matches(key: Any, output: Any) -> bool:
    text = _text(output)
    if isinstance(key, bool):
        return text.strip().lower() == str(key).lower()
    if isinstance(key, int | float):
        try:
            number = float(text)
        except ValueError:
            return False
        return not math.isnan(number) and number == key
    return text == key


def naive_gate(agent: spec.AgentSpec, history: History) -> tuple[tuple[str, ...], bool, dict]:
    """Allowed tools (declaration order), force, and prefills for the next call."""
    tools = list(agent.tool_names())
    rules = agent.rules
    inits = [r for r in rules if isinstance(r, spec.InitRule)]
    prefill: dict[str, dict[str, Any]] = {}
    if not history and inits:
        allowed = {t for r in inits for t in spec.as_tuple(r.init)}
        for r in inits:
            if r.args:
                prefill.setdefault(spec.as_tuple(r.init)[0], {}).update(r.args)
        return tuple(t for t in tools if t in allowed), True, prefill
    last, output = history[-1] if history else (None, None)
    called = [name for name, _ in history]
    allowed = set(tools)
    force = False
    for r in rules:
        if isinstance(r, spec.ChildRule):
            if r.after == last:
                allowed &= set(spec.as_tuple(r.allow))
                force = True
                for tool, args in (r.args or {}).items():
                    prefill.setdefault(tool, {}).update(args)
        elif isinstance(r, spec.ParentRule):
            children = set(spec.as_tuple(r.tools))
            if r.only_after == last:
                allowed &= children
                force = True
            else:
                allowed -= children
        elif isinstance(r, spec.ConditionalRule):
            if r.after == last:
                force = True
                match = [child for key, child in r.on_output.items() if _key_matches(key, output)]
                if match:
                    allowed &= {match[0]}
                elif r.default is not None:
                    allowed &= {r.default}
                elif r.strict:
                    allowed = set()
        elif isinstance(r, spec.MaxCallsRule):
            for tool in spec.as_tuple(r.tools):
                if called.count(tool) >= r.max_calls:
                    allowed.discard(tool)
    return tuple(t for t in tools if t in allowed), force, prefill


def _flag(agent: spec.AgentSpec, kind: type, attribute: str) -> set[str]:
    return {
        t for r in agent.rules if isinstance(r, kind) for t in spec.as_tuple(getattr(r, attribute))
    }


def _pending(agent: spec.AgentSpec, history: History) -> list[str]:
    required = _flag(agent, spec.RequiredBeforeExitRule, "required_before_exit")
    called = {name for name, _ in history}
    return [t for t in agent.tool_names() if t in required and t not in called]


def _stop_or_required(
    agent: spec.AgentSpec, history: History, reason: Reason
) -> tuple[bool, Reason]:
    if _pending(agent, history):
        return _unless_dead_end(agent, history, (True, Reason.REQUIRED_BEFORE_EXIT))
    return False, reason


def _unless_dead_end(agent: spec.AgentSpec, history: History, verdict: tuple[bool, Reason]):
    # Nothing allowed: a dead end where a call is forced or a required tool is pending;
    # otherwise the run goes on to an answer-only step (the reply ends it).
    allowed, force, _ = naive_gate(agent, history)
    if verdict[0] and not allowed and (force or _pending(agent, history)):
        return False, Reason.DEAD_END
    return verdict


def naive_after_call(
    agent: spec.AgentSpec, history: History, tool: str, heartbeat: bool | None
) -> tuple[bool, Reason]:
    """Continue or stop after `tool` (already the last entry of `history`)."""
    if tool in _flag(agent, spec.TerminalRule, "terminal"):
        return _stop_or_required(agent, history, Reason.TERMINAL_TOOL)
    rule_tools = {
        r.after for r in agent.rules if isinstance(r, spec.ChildRule | spec.ConditionalRule)
    }
    rule_tools |= _flag(agent, spec.MaxCallsRule, "tools")
    if tool in rule_tools:
        verdict = (True, Reason.RULE_CONTINUES)
    elif tool in _flag(agent, spec.ContinueRule, "continue_"):
        verdict = (True, Reason.CONTINUE_RULE)
    elif heartbeat is None:
        verdict = (True, Reason.TOOL_CALL)
    elif heartbeat:
        verdict = (True, Reason.HEARTBEAT)
    else:
        return _stop_or_required(agent, history, Reason.NO_HEARTBEAT)
    return _unless_dead_end(agent, history, verdict)


# -- random rule files and traces -------------------------------------------------------

# Pairwise unequal in Python (True == 1 would be a duplicate mapping key).
CASE_KEYS = [True, False, 2, 2.5, "true", "True", "billing", "1", "yes"]
OUTPUTS = ["TRUE", " false ", "true", "2.0", "2.5", "True", "billing", "billing ", "1", "x", None]


@st.composite
def rule_files(draw: st.DrawFn) -> tuple[str, list[str]]:
    n = draw(st.integers(2, 6))
    tools = [f"t{i}" for i in range(n)]
    tool = st.sampled_from(tools)
    some = st.lists(tool, min_size=1, max_size=3, unique=True)
    one_or_more = some.map(lambda names: names[0] if len(names) == 1 else names)
    rules: list[dict[str, Any]] = []

    for _ in range(draw(st.integers(0, 2))):
        rule: dict[str, Any] = {"init": draw(one_or_more)}
        if isinstance(rule["init"], str) and draw(st.booleans()):
            rule["args"] = {draw(st.sampled_from("xyz")): draw(st.integers(0, 3))}
        rules.append(rule)
    for _ in range(draw(st.integers(0, 3))):
        allow = draw(some)
        rule = {"after": draw(tool), "allow": allow}
        if draw(st.booleans()):
            rule["args"] = {
                child: {draw(st.sampled_from("xyz")): draw(st.integers(0, 3))}
                for child in allow[:2]
            }
        rules.append(rule)
    # At most one conditional per tool (two are E032).
    for after in draw(st.lists(tool, max_size=2, unique=True)):
        keys = draw(st.lists(st.sampled_from(CASE_KEYS), min_size=1, max_size=3, unique=True))
        rule = {"after": after, "on_output": {key: draw(tool) for key in keys}}
        if draw(st.booleans()):
            rule["default"] = draw(tool)
        elif draw(st.booleans()):
            rule["strict"] = True
        rules.append(rule)
    # Each child under one parent at most (a child of two parents is E025).
    parented: set[str] = set()
    for _ in range(draw(st.integers(0, 2))):
        children = [c for c in draw(some) if c not in parented]
        if children:
            parented |= set(children)
            rules.append({"only_after": draw(tool), "tools": children})
    for _ in range(draw(st.integers(0, 2))):
        rules.append({"max_calls": draw(st.integers(1, 3)), "tools": draw(one_or_more)})
    # Terminal and continue never share a tool (E023).
    flagged = draw(st.lists(tool, max_size=n, unique=True))
    cut = draw(st.integers(0, len(flagged)))
    if flagged[:cut]:
        rules.append({"terminal": flagged[:cut]})
    if flagged[cut:]:
        rules.append({"continue": flagged[cut:]})
    for key in ("required_before_exit", "requires_approval"):
        if draw(st.booleans()):
            rules.append({key: draw(one_or_more)})

    order = draw(st.permutations(range(len(rules))))
    document = {"version": 1, "agent": "random", "tools": tools, "rules": [rules[i] for i in order]}
    return yaml.safe_dump(document, sort_keys=False), tools


steps = st.lists(
    st.tuples(
        st.integers(0, 5),  # which tool (modulo the allowed tools, or all tools for a violation)
        st.integers(0, 5),  # 0: try a tool that may be forbidden (a violation), else an allowed one
        st.sampled_from(OUTPUTS),
        st.sampled_from([None, None, True, False]),  # heartbeat mode or default mode
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(rule_files(), steps)
def test_machine_agrees_with_naive_interpreter(generated: tuple[str, list[str]], calls) -> None:
    text, tools = generated
    rule_file = parse_rules(text, "random.yaml")
    assume(rule_file.ok)  # E024/E026 sets that never intersect are rejected by the checker
    agent = rule_file.require()
    machine = compile_rules(rule_file)
    position = machine.start()
    history: History = []
    for number, (index, violate, output, heartbeat) in enumerate([(None, 0, None, None), *calls]):
        if index is not None:
            expected_allowed = naive_gate(agent, history)[0]
            # Mostly allowed calls, so runs get deep; sometimes any tool, to test violations.
            pool = expected_allowed if violate and expected_allowed else tools
            tool = pool[index % len(pool)]
            if tool not in expected_allowed:
                try:
                    machine.advance(position, tool, output)
                except NotAllowedError:
                    continue  # a violation changes nothing
                raise AssertionError(f"machine accepted {tool!r}, allowed {expected_allowed}")
            position = machine.advance(position, tool, output)
            history.append((tool, output))
            verdict = machine.after_call(position, tool, heartbeat=heartbeat)
            assert (verdict.continues, verdict.reason) == naive_after_call(
                agent, history, tool, heartbeat
            ), f"verdict after step {number}: {history}"
        allowed, force, prefill = naive_gate(agent, history)
        gate = machine.gate(position)
        where = f"after {history}"
        assert gate.allowed == allowed, where
        assert gate.force is force, where
        assert gate.forced_tool == (allowed[0] if force and len(allowed) == 1 else None), where
        assert {t: dict(a) for t, a in gate.prefill.items()} == prefill, where
        text_verdict = machine.after_text(position)
        assert (text_verdict.continues, text_verdict.reason) == _stop_or_required(
            agent, history, Reason.END_TURN
        ), where
        pending = _pending(agent, history)
        assert list(machine.pending_required(position)) == pending
        if text_verdict.continues:
            assert all(name in (text_verdict.message or "") for name in pending)
        # The position is all the history the machine needs: a dump/load round trip keeps it.
        assert machine.load(machine.dump(position)) == position
    try:
        machine.advance(position, "no_such_tool")
    except UnknownToolError:
        pass
    else:  # pragma: no cover - the assertion is the test
        raise AssertionError("an unknown tool was accepted")
