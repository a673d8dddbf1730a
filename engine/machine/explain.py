"""Why a tool is or is not allowed at a position: the rules responsible, with locations.

Not on the hot path: it re-reads the rules of the spec the machine was compiled from and
asks each what it contributes at the position's node, as the reference semantics define it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.language import spec
from engine.machine import Machine, Position, RuleRef


@dataclass(frozen=True)
class Explanation:
    tool: str
    allowed: bool
    forced: bool
    node: str
    reasons: tuple[tuple[RuleRef | None, str], ...]  # (rule or None, sentence)

    def __str__(self) -> str:
        verdict = "allowed" if self.allowed else "NOT allowed"
        head = f"{self.tool} is {verdict} at {self.node}"
        if self.allowed and self.forced:
            head += " (a tool call is forced here)"
        lines = [head]
        for rule, sentence in self.reasons:
            where = f"{rule.span}: " if rule else ""
            lines.append(f"  - {where}{sentence}")
        return "\n".join(lines)


def explain(machine: Machine, position: Position, tool: str) -> Explanation:
    """Why `tool` is (not) allowed at `position`."""
    node = machine.node(position)
    gate = machine.gate(position)
    if tool not in machine.tool_index:
        sentence = f"the agent has no tool {tool!r}; it has: {', '.join(machine.tools)}"
        return Explanation(tool, False, gate.force, node.name, ((None, sentence),))
    allowed = tool in gate.allowed
    agent: spec.AgentSpec = machine.spec
    reasons: list[tuple[RuleRef | None, str]] = []
    init_rules = [i for i, r in enumerate(agent.rules) if isinstance(r, spec.InitRule)]
    if node.last_tool is None and init_rules:
        reasons += [(machine.rules[i], _init_reason(agent.rules[i], tool)) for i in init_rules]
        return Explanation(tool, allowed, gate.force, node.name, tuple(reasons))
    ask = _Question(machine, position, tool, node.last_tool, node.case)
    for i, rule in enumerate(agent.rules):
        reason = _REASONS.get(type(rule))
        said = reason(ask, rule) if reason else None
        if said is not None:
            reasons.append((machine.rules[i], said))
    if allowed and not reasons:
        reasons.append((None, "no rule restricts it here"))
    if not gate.allowed:
        reasons.append((None, _nothing_allowed(machine, position)))
    return Explanation(tool, allowed, gate.force, node.name, tuple(reasons))


@dataclass(frozen=True)
class _Question:
    """Why `tool` is (not) allowed at `position`, whose node follows `last` (output `case`)."""

    machine: Machine
    position: Position
    tool: str
    last: str | None
    case: str | None


def _init_reason(rule: Any, tool: str) -> str:
    assert isinstance(rule, spec.InitRule)
    verb = "allows" if tool in spec.as_tuple(rule.init) else "does not include"
    return (
        f"init rule {verb} {tool!r} as the first call; at the start only init tools may be called"
    )


def _child_reason(ask: _Question, rule: Any) -> str | None:
    if rule.after != ask.last:
        return None
    children = spec.as_tuple(rule.allow)
    if ask.tool not in children:
        return f"after {ask.last!r} only {', '.join(children)} may be called"
    return f"after {ask.last!r} the child rule allows {ask.tool!r}"


def _parent_reason(ask: _Question, rule: Any) -> str | None:
    children = spec.as_tuple(rule.tools)
    last = ask.last
    if ask.tool in children and rule.only_after != last:
        return f"{ask.tool!r} may only be called right after {rule.only_after!r}, and " + (
            f"the last tool was {last!r}" if last else "no tool was called yet"
        )
    if rule.only_after == last and ask.tool not in children:
        return f"after {last!r} only {', '.join(children)} may be called"
    return None


def _conditional_reason(ask: _Question, rule: Any) -> str | None:
    if rule.after != ask.last:
        return None
    if ask.case == "no match":
        if not rule.strict:
            return None
        return (
            f"the output of {ask.last!r} matched no case and the rule is strict: "
            "no tool may be called"
        )
    if ask.case == "default":
        target, case = rule.default, "no case matched"
    else:
        target = next(v for k, v in rule.on_output.items() if repr(k) == ask.case)
        case = f"its output matched {ask.case}"
    verb = "allows" if target == ask.tool else "allows only"
    return f"after {ask.last!r}, {case}: the rule {verb} {target!r}"


def _max_calls_reason(ask: _Question, rule: Any) -> str | None:
    if ask.tool not in spec.as_tuple(rule.tools):
        return None
    used = ask.machine.count(ask.position, ask.tool)
    if used >= rule.max_calls:
        return f"{ask.tool!r} was called {used} time(s), its limit is {rule.max_calls}"
    return f"{ask.tool!r} was called {used} of {rule.max_calls} allowed time(s)"


# What each kind of rule says about a tool at a position (None: nothing); other kinds say
# nothing about whether a tool is allowed.
_REASONS: dict[type, Callable[[_Question, Any], str | None]] = {
    spec.ChildRule: _child_reason,
    spec.ParentRule: _parent_reason,
    spec.ConditionalRule: _conditional_reason,
    spec.MaxCallsRule: _max_calls_reason,
}


def _nothing_allowed(machine: Machine, position: Position) -> str:
    """What happens where no tool is allowed: a dead end, or an answer-only position."""
    if not machine.dead_end(position):
        return (
            "no tool is allowed here and no call is forced: the model is asked for its final "
            "answer, which ends the run"
        )
    if machine.gate(position).force:
        return "no tool is allowed here but a call is forced: a dead end"
    pending = ", ".join(machine.pending_required(position))
    return f"no tool is allowed here but {pending} must be called before the run ends: a dead end"
