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

from collections import defaultdict
from collections.abc import Iterable
from types import MappingProxyType
from typing import Any

from engine.errors import RuleFileError
from engine.language import spec
from engine.language.loader import RuleFile
from engine.language.prompt import rule_line
from engine.language.yamltree import plain_key
from engine.machine import Gate, Machine, Node, RuleRef


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
        keys = tuple(plain_key(k) for k in rule.on_output)  # `true` and `1` stay two keys
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


class _RuleIndex:
    """The rules grouped by the tool they react to, so each node reads only its own rules.

    Compiling visits every node; scanning every rule at every node was O(nodes x rules)
    (seconds for a 1,000-tool file), and so was a set of every tool per node (minutes for
    30,000 tools): allowed sets are bit masks (bit i = tool i), a few machine words per node.
    The semantics are those of the per-rule scan.
    """

    def __init__(self, agent: spec.AgentSpec) -> None:
        self.tools = agent.tool_names()
        self.bit = {t: 1 << i for i, t in enumerate(self.tools)}
        self.all_mask = (1 << len(self.tools)) - 1
        self.init: list[str] = []
        self.init_args: list[tuple[str, dict[str, Any]]] = []
        self.child_masks: dict[str, list[int]] = defaultdict(list)
        self.child_args: dict[str, list[dict[str, dict[str, Any]]]] = defaultdict(list)
        self.parent_masks: dict[str, list[int]] = defaultdict(list)
        self.conditionals: dict[str, list[spec.ConditionalRule]] = defaultdict(list)
        self.case_target: dict[int, dict[str, str]] = {}  # id(rule) -> case label -> tool
        parents_of: dict[str, set[str]] = defaultdict(set)
        for rule in agent.rules:
            match rule:
                case spec.InitRule():
                    self.init += spec.as_tuple(rule.init)
                    if rule.args:
                        self.init_args.append((spec.as_tuple(rule.init)[0], rule.args))
                case spec.ChildRule():
                    self.child_masks[rule.after].append(self.mask(spec.as_tuple(rule.allow)))
                    if rule.args:
                        self.child_args[rule.after].append(rule.args)
                case spec.ParentRule():
                    children = set(spec.as_tuple(rule.tools))
                    self.parent_masks[rule.only_after].append(self.mask(children))
                    for child in children:
                        parents_of[child].add(rule.only_after)
                case spec.ConditionalRule():
                    self.conditionals[rule.after].append(rule)
                    self.case_target[id(rule)] = {repr(k): v for k, v in rule.on_output.items()}
        # A parent rule's children are excluded wherever the last tool is not that parent:
        # after X, every child some rule ties to a parent other than X is excluded.
        self.parented = self.mask(parents_of)
        self.own_only: dict[str, int] = defaultdict(int)  # parent -> its only-parent children
        for child, parents in parents_of.items():
            if len(parents) == 1:
                self.own_only[next(iter(parents))] |= self.bit[child]

    def mask(self, tools: Iterable[str]) -> int:
        bits = self.bit
        return sum(bits[t] for t in set(tools) if t in bits)

    def allowed_mask(self, node: Node) -> tuple[int, bool]:
        """The allowed tools at a node as a bit mask, and whether a call is forced there."""
        last = node.last_tool
        if last is None:
            return (
                (self.mask(self.init), True)
                if self.init
                else (self.all_mask & ~self.parented, False)
            )
        allowed = self.all_mask
        forced = False
        for children in self.child_masks.get(last, ()):
            allowed &= children
            forced = True
        own = self.parent_masks.get(last, ())
        for children in own:
            allowed &= children
            forced = True
        excluded = self.parented & ~self.own_only[last] if own else self.parented
        allowed &= ~excluded
        for rule in self.conditionals.get(last, ()):
            forced = True
            if node.case == "default":
                allowed &= self.bit.get(rule.default or "", 0)
            elif node.case == "no match":
                if rule.strict:
                    allowed = 0
            else:
                allowed &= self.bit[self.case_target[id(rule)][node.case or ""]]
        return allowed, forced

    def allowed(self, node: Node) -> tuple[set[str], bool]:
        mask, forced = self.allowed_mask(node)
        return set(_tools_of(mask, self.tools)), forced

    def prefill(self, node: Node) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        if node.last_tool is None:
            for tool, args in self.init_args:
                merged.setdefault(tool, {}).update(args)
            return merged
        for rule_args in self.child_args.get(node.last_tool, ()):
            for tool, args in rule_args.items():
                merged.setdefault(tool, {}).update(args)
        return merged


def _tools_of(mask: int, tools: tuple[str, ...]) -> tuple[str, ...]:
    """The tools whose bits are set, in declaration order (cost: the set bits, not all tools)."""
    out = []
    while mask:
        low = mask & -mask
        out.append(tools[low.bit_length() - 1])
        mask ^= low
    return tuple(out)


def node_allowed(agent: spec.AgentSpec, node: Node) -> tuple[set[str], bool]:
    """The allowed set at a node (no max_calls exhausted) and whether a call is forced there."""
    return _RuleIndex(agent).allowed(node)


def _prefill(agent: spec.AgentSpec, node: Node) -> dict[str, dict[str, Any]]:
    """Prefilled arguments active at a node; a later rule wins key by key."""
    return _RuleIndex(agent).prefill(node)


def _flagged(agent: spec.AgentSpec, kind: type[Any], attribute: str) -> frozenset[str]:
    return frozenset(
        t for r in agent.rules if isinstance(r, kind) for t in spec.as_tuple(getattr(r, attribute))
    )


def _approval_conditions(agent: spec.AgentSpec) -> dict[str, tuple[dict[str, Any], ...]]:
    """Tool -> the `when:` schemas of its approval rules, for the tools whose every
    approval rule has one (a rule without `when:` makes every call need approval)."""
    conditions: dict[str, list[dict[str, Any]]] = {}
    always: set[str] = set()
    for rule in agent.rules:
        if isinstance(rule, spec.RequiresApprovalRule):
            for tool in spec.as_tuple(rule.requires_approval):
                if rule.when is None:
                    always.add(tool)
                else:
                    conditions.setdefault(tool, []).append(rule.when)
    return {t: tuple(whens) for t, whens in conditions.items() if t not in always}


def _gates(index: _RuleIndex, nodes: list[Node], tools: tuple[str, ...]) -> list[Gate]:
    """Each node's static gate: allowed tools in declared order, forcing, prefilled args."""
    ordered_sets: dict[int, tuple[str, ...]] = {}  # many nodes share one allowed set
    gates = []
    for node in nodes:
        mask, forced = index.allowed_mask(node)
        ordered = ordered_sets.get(mask)
        if ordered is None:
            ordered = _tools_of(mask, tools)
            ordered_sets[mask] = ordered
        forced_tool = ordered[0] if forced and len(ordered) == 1 else None
        prefill = MappingProxyType({t: MappingProxyType(a) for t, a in index.prefill(node).items()})
        gates.append(Gate(ordered, forced, forced_tool, prefill, mask))
    return gates


def _limits(agent: spec.AgentSpec) -> dict[str, int]:
    """Tool -> its max_calls limit; several limits on one tool: the smallest binds (each rule
    removes the tool)."""
    limits: dict[str, int] = {}
    for rule in agent.rules:
        if isinstance(rule, spec.MaxCallsRule):
            for tool in spec.as_tuple(rule.tools):
                limits[tool] = min(rule.max_calls, limits.get(tool, rule.max_calls))
    return limits


def compile_rules(rule_file: RuleFile) -> Machine:
    """Build the machine of a valid rule file; `RuleFileError` if the file has errors."""
    agent = rule_file.require()
    tools = agent.tool_names()
    nodes, next_node, case_keys, case_nodes = _nodes(agent)

    gates = _gates(_RuleIndex(agent), nodes, tools)
    limits = _limits(agent)
    slot_of = {t: i for i, t in enumerate(t for t in tools if t in limits)}
    count_slot = tuple(slot_of.get(t, -1) for t in tools)
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
        approval_when=_approval_conditions(agent),
        rules=_rule_refs(rule_file, agent),
        source_path=rule_file.path,
        sha256=rule_file.sha256,
        spec=agent,
        output_text=agent.run.output_text,
    )


__all__ = ["RuleFileError", "compile_rules", "node_allowed"]
