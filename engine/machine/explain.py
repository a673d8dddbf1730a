"""Why a tool is or is not allowed at a position: the rules responsible, with locations.

Not on the hot path: it re-reads the rules of the spec the machine was compiled from and
asks each what it contributes at the position's node, as the reference semantics define it.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    last = node.last_tool
    init_rules = [i for i, r in enumerate(agent.rules) if isinstance(r, spec.InitRule)]
    if last is None and init_rules:
        for i in init_rules:
            rule = agent.rules[i]
            assert isinstance(rule, spec.InitRule)
            inside = tool in spec.as_tuple(rule.init)
            verb = "allows" if inside else "does not include"
            reasons.append(
                (
                    machine.rules[i],
                    f"init rule {verb} {tool!r} as the first call; "
                    f"at the start only init tools may be called",
                )
            )
        return Explanation(tool, allowed, gate.force, node.name, tuple(reasons))
    for i, rule in enumerate(agent.rules):
        ref = machine.rules[i]
        match rule:
            case spec.ChildRule() if rule.after == last:
                children = spec.as_tuple(rule.allow)
                if tool not in children:
                    reasons.append(
                        (ref, f"after {last!r} only {', '.join(children)} may be called")
                    )
                else:
                    reasons.append((ref, f"after {last!r} the child rule allows {tool!r}"))
            case spec.ParentRule():
                children = spec.as_tuple(rule.tools)
                if tool in children and rule.only_after != last:
                    reasons.append(
                        (
                            ref,
                            f"{tool!r} may only be called right after "
                            f"{rule.only_after!r}, and "
                            + (f"the last tool was {last!r}" if last else "no tool was called yet"),
                        )
                    )
                elif rule.only_after == last and tool not in children:
                    reasons.append(
                        (ref, f"after {last!r} only {', '.join(children)} may be called")
                    )
            case spec.ConditionalRule() if rule.after == last:
                if node.case == "no match":
                    if rule.strict:
                        reasons.append(
                            (
                                ref,
                                f"the output of {last!r} matched no case and the "
                                "rule is strict: no tool may be called",
                            )
                        )
                    continue
                target = (
                    rule.default
                    if node.case == "default"
                    else next(v for k, v in rule.on_output.items() if repr(k) == node.case)
                )
                case = (
                    "no case matched"
                    if node.case == "default"
                    else f"its output matched {node.case}"
                )
                verb = "allows" if target == tool else "allows only"
                reasons.append((ref, f"after {last!r}, {case}: the rule {verb} {target!r}"))
            case spec.MaxCallsRule() if tool in spec.as_tuple(rule.tools):
                used = machine.count(position, tool)
                if used >= rule.max_calls:
                    reasons.append(
                        (ref, f"{tool!r} was called {used} time(s), its limit is {rule.max_calls}")
                    )
                else:
                    reasons.append(
                        (ref, f"{tool!r} was called {used} of {rule.max_calls} allowed time(s)")
                    )
    if allowed and not reasons:
        reasons.append((None, "no rule restricts it here"))
    if not gate.allowed:
        reasons.append((None, _nothing_allowed(machine, position)))
    return Explanation(tool, allowed, gate.force, node.name, tuple(reasons))


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
