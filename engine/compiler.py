"""Compile a checked rule file into an immutable `Machine` of gating tables.

The semantics are those of `../shared/spec/reference-semantics.md` (Letta's tool rules),
computed here once per node instead of once per step:
- start: the init tools if there are init rules, else what the other rules allow with an
  empty history;
- after tool X (or after X with output case K): the intersection of what every child,
  conditional and parent rule contributes (max_calls limits are applied per position);
- a call is forced at the start when there is an init rule, and after X when X is the tool of
  a child, conditional or parent rule.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from engine import spec
from engine.errors import RuleFileError
from engine.loader import RuleFile
from engine.machine import Gate, Machine, Node, RuleRef
from engine.prompt import rule_line


def _rule_refs(rule_file: RuleFile, agent: spec.AgentSpec) -> tuple[RuleRef, ...]:
    return tuple(
        RuleRef(i, spec.rule_kind(rule) or "", rule_file.rule_span(i), rule_line(rule))
        for i, rule in enumerate(agent.rules)
    )


def _nodes(
    agent: spec.AgentSpec,
) -> tuple[list[Node], list[int], dict[int, tuple[Any, ...]], dict[int, tuple[int, ...]]]:
    """The machine's nodes, plus per tool: its next node (-1: by output case) and case tables."""
    tools = agent.tool_names()
    conditional = {r.after: r for r in agent.rules if isinstance(r, spec.ConditionalRule)}
    nodes = [Node("start", None)]
    next_node: list[int] = []
    case_keys: dict[int, tuple[Any, ...]] = {}
    case_nodes: dict[int, tuple[int, ...]] = {}
    for index, tool in enumerate(tools):
        rule = conditional.get(tool)
        if rule is None:
            next_node.append(len(nodes))
            nodes.append(Node(f"after:{tool}", tool))
            continue
        next_node.append(-1)
        keys = tuple(rule.on_output)
        case_keys[index] = keys
        targets = []
        for key in keys:
            targets.append(len(nodes))
            nodes.append(Node(f"after:{tool}={key!r}", tool, repr(key)))
        fallback = "default" if rule.default is not None else "no match"
        targets.append(len(nodes))
        nodes.append(Node(f"after:{tool}[{fallback}]", tool, fallback))
        case_nodes[index] = tuple(targets)
    return nodes, next_node, case_keys, case_nodes


def node_allowed(agent: spec.AgentSpec, node: Node) -> tuple[set[str], bool]:
    """The allowed set at a node (no max_calls exhausted) and whether a call is forced there."""
    tools = agent.tool_names()
    init = [t for r in agent.rules if isinstance(r, spec.InitRule) for t in spec.as_tuple(r.init)]
    if node.last_tool is None and init:
        return set(init), True
    allowed = set(tools)
    forced = False
    last = node.last_tool
    for rule in agent.rules:
        match rule:
            case spec.ChildRule() if rule.after == last:
                allowed &= set(spec.as_tuple(rule.allow))
                forced = True
            case spec.ParentRule():
                children = set(spec.as_tuple(rule.tools))
                if rule.only_after == last:
                    allowed &= children
                    forced = True
                else:
                    allowed -= children
            case spec.ConditionalRule() if rule.after == last:
                forced = True
                if node.case == "default":
                    allowed &= {rule.default}
                elif node.case == "no match":
                    if rule.strict:
                        allowed = set()
                else:
                    target = next(v for k, v in rule.on_output.items() if repr(k) == node.case)
                    allowed &= {target}
    return allowed, forced


def _prefill(agent: spec.AgentSpec, node: Node) -> dict[str, dict[str, Any]]:
    """Prefilled arguments active at a node; a later rule wins key by key."""
    merged: dict[str, dict[str, Any]] = {}
    for rule in agent.rules:
        if isinstance(rule, spec.InitRule) and node.last_tool is None and rule.args:
            (tool,) = spec.as_tuple(rule.init)
            merged.setdefault(tool, {}).update(rule.args)
        elif isinstance(rule, spec.ChildRule) and rule.after == node.last_tool and rule.args:
            for tool, args in rule.args.items():
                merged.setdefault(tool, {}).update(args)
    return merged


def _flagged(agent: spec.AgentSpec, kind: type[Any], attribute: str) -> frozenset[str]:
    return frozenset(
        t for r in agent.rules if isinstance(r, kind) for t in spec.as_tuple(getattr(r, attribute))
    )


def compile_rules(rule_file: RuleFile) -> Machine:
    """Build the machine of a valid rule file; `RuleFileError` if the file has errors."""
    agent = rule_file.require()
    tools = agent.tool_names()
    position = {t: i for i, t in enumerate(tools)}
    nodes, next_node, case_keys, case_nodes = _nodes(agent)

    gates = []
    for node in nodes:
        allowed, forced = node_allowed(agent, node)
        ordered = tuple(t for t in tools if t in allowed)
        mask = sum(1 << position[t] for t in ordered)
        forced_tool = ordered[0] if forced and len(ordered) == 1 else None
        prefill = MappingProxyType(
            {t: MappingProxyType(a) for t, a in _prefill(agent, node).items()}
        )
        gates.append(Gate(ordered, forced, forced_tool, prefill, mask))

    limits: dict[str, int] = {}
    for rule in agent.rules:
        if isinstance(rule, spec.MaxCallsRule):
            for tool in spec.as_tuple(rule.tools):
                # Several limits on one tool: the smallest binds (each rule removes the tool).
                limits[tool] = min(rule.max_calls, limits.get(tool, rule.max_calls))
    counted = [t for t in tools if t in limits]
    count_slot = tuple(counted.index(t) if t in limits else -1 for t in tools)
    count_limit = tuple(limits.get(t, 0) for t in tools)

    required = _flagged(agent, spec.RequiredBeforeExitRule, "required_before_exit")
    required_bit = tuple((1 << i) if t in required else 0 for i, t in enumerate(tools))
    rule_continues = frozenset(
        {r.after for r in agent.rules if isinstance(r, spec.ChildRule | spec.ConditionalRule)}
        | set(limits)
    )
    return Machine(
        agent=agent.agent,
        tools=tools,
        nodes=tuple(nodes),
        gates=tuple(gates),
        next_node=tuple(next_node),
        case_keys=case_keys,
        case_nodes=case_nodes,
        count_slot=count_slot,
        count_limit=count_limit,
        required_bit=required_bit,
        terminal=_flagged(agent, spec.TerminalRule, "terminal"),
        continue_tools=_flagged(agent, spec.ContinueRule, "continue_"),
        rule_continues=rule_continues,
        approval=_flagged(agent, spec.RequiresApprovalRule, "requires_approval"),
        rules=_rule_refs(rule_file, agent),
        source_path=rule_file.path,
        sha256=rule_file.sha256,
        spec=agent,
    )


__all__ = ["RuleFileError", "compile_rules", "node_allowed"]
