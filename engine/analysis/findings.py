"""Static findings over an explored machine: dead ends, traps, unreachable tools and rules.

Codes (stable; silences and tests name them). Errors make `toolfsm check` exit 1:

    C101 error    dead end: a reachable position where no tool is allowed but the run cannot
                  end (a call is forced, or a required-before-exit tool is pending)
    C102 warning  tool can never be called (no reachable position allows it)
    C103 warning  rule never fires (max_calls limit never reached, required tool never pending
                  when the run tries to stop, ...)
    C104 warning  conditional case can never be chosen (an earlier key matches all its outputs)
    C105 error    required-before-exit tool cannot be called before the run could end
    C106 warning  child rule allows a tool that can never be called right after its tool
    C107 error    max_calls conflict: the limit leaves nothing allowed where the rules need it
    C108 warning  a strict conditional stops the run at a dead end when no case matches (the
                  author asked for it; silence it when the tool's outputs are exhaustive)
    C110 error    no way to finish: a reachable loop with no terminal tool and no reply allowed
    C120 warning  forced position where every allowed tool needs approval
    C121 warning  terminal tool never ends a run (required tools are always pending)
    C190 error    the exploration bound was hit; the check is incomplete

Every finding carries the shortest trace that leads to it, when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.analysis.explore import DEAD, EDGES_PER_STATE, END, Graph
from engine.errors import Diagnostic, Severity, SourceSpan
from engine.language import spec
from engine.language.yamltree import SourceMap
from engine.machine import Machine, Position

DEAD_END_CODES = frozenset({"C101", "C107", "C108"})
TRAP_CODES = frozenset({"C105", "C110"})
MAX_REPORTS = 20  # per code: past this the same problem is only being repeated


@dataclass(frozen=True)
class Finding:
    """A diagnostic plus what a test needs to replay it: the position its trace leads to."""

    diagnostic: Diagnostic
    position: Position | None = None
    expect: int | None = None  # index of the `expect:` assertion it refutes, if any

    @property
    def code(self) -> str:
        return self.diagnostic.code

    @property
    def trace(self) -> tuple[str, ...] | None:
        return self.diagnostic.trace


class Locator:
    """Spans in the rule file: rules from the machine, anything else from the source map."""

    def __init__(self, machine: Machine, source: SourceMap | None) -> None:
        self.machine = machine
        self.source = source

    def at(self, path: tuple[Any, ...], *, key: bool = False) -> SourceSpan:
        if self.source is None:
            if len(path) >= 2 and path[0] == "rules":
                return self.rule(path[1])
            return SourceSpan(self.machine.source_path, 1, 1)
        return self.source.span(path, key=key)

    def rule(self, index: int) -> SourceSpan:
        return self.machine.rules[index].span

    def tool(self, name: str) -> SourceSpan:
        return self.at(("tools", self.machine.tool_index[name]))


def _quote(trace: tuple[str, ...]) -> str:
    return " -> ".join(trace) if trace else "the start"


def _bits(mask: int, tools: tuple[str, ...]) -> list[str]:
    return [t for i, t in enumerate(tools) if mask >> i & 1]


def _rules(machine: Machine) -> list[Any]:
    return list(machine.spec.rules)


def forcing_rule(machine: Machine, node: int) -> int | None:
    """The rule that forces a call at a node: init at the start, else a rule on the last tool."""
    last = machine.nodes[node].last_tool
    rules = _rules(machine)
    for i, rule in enumerate(rules):
        if last is None and isinstance(rule, spec.InitRule):
            return i
        if isinstance(rule, spec.ChildRule | spec.ConditionalRule) and rule.after == last:
            return i
    for i, rule in enumerate(rules):
        if last is not None and isinstance(rule, spec.ParentRule) and rule.only_after == last:
            return i
    return None


def _max_calls_rule(machine: Machine, tool: str) -> int | None:
    limit = machine.max_calls(tool)
    for i, rule in enumerate(_rules(machine)):
        if (
            isinstance(rule, spec.MaxCallsRule)
            and tool in spec.as_tuple(rule.tools)
            and rule.max_calls == limit
        ):
            return i
    return None


def _narrowing_rule(machine: Machine, node: int) -> int | None:
    """The rule that empties a node's allowed set: strict conditional, child, then parent."""
    data = machine.nodes[node]
    rules = _rules(machine)
    for i, rule in enumerate(rules):
        if isinstance(rule, spec.ConditionalRule) and rule.after == data.last_tool:
            return i
    found = forcing_rule(machine, node)
    if found is not None:
        return found
    for i, rule in enumerate(rules):
        if isinstance(rule, spec.ParentRule):
            return i
    return None


def _strict(machine: Machine, index: int | None) -> bool:
    """Whether rule `index` is a strict conditional rule."""
    rule = machine.spec.rules[index] if index is not None else None
    return isinstance(rule, spec.ConditionalRule) and rule.strict


class _Findings:
    def __init__(self, graph: Graph, locator: Locator) -> None:
        self.graph = graph
        self.machine = graph.machine
        self.at = locator
        self.items: list[Finding] = []
        self.counts: dict[str, int] = {}

    def add(
        self,
        severity: Severity,
        code: str,
        message: str,
        span: SourceSpan,
        *,
        rule: int | None = None,
        hint: str | None = None,
        trace: tuple[str, ...] | None = None,
        position: Position | None = None,
    ) -> None:
        self.counts[code] = self.counts.get(code, 0) + 1
        if self.counts[code] > MAX_REPORTS:
            return
        diagnostic = Diagnostic(severity, code, message, span, rule=rule, hint=hint, trace=trace)
        self.items.append(Finding(diagnostic, position))

    def rule_span(self, index: int | None, fallback_tool: str | None = None) -> SourceSpan:
        if index is not None:
            return self.at.rule(index)
        if fallback_tool is not None:
            return self.at.tool(fallback_tool)
        return self.at.at(())

    # -- dead ends ------------------------------------------------------------------

    def dead_ends(self) -> None:
        graph, machine = self.graph, self.machine
        seen: set[tuple[int, int]] = set()
        for source in range(len(graph)):
            lo, hi = graph.edge_start[source], graph.edge_start[source + 1]
            for j in range(lo, hi):
                if graph.edge_target[j] != DEAD:
                    continue
                step = graph.steps[graph.edge_step[j]]
                after = machine.advance(graph.position(source), step.tool, step.output)
                self._dead_end(after, graph.trace(source, graph.edge_step[j]), seen)
            if graph.text_dead[source]:
                self._dead_end(graph.position(source), graph.trace(source), seen, text=True)

    def _dead_end(
        self,
        position: Position,
        trace: tuple[str, ...],
        seen: set[tuple[int, int]],
        *,
        text: bool = False,
    ) -> None:
        """Report the dead end at `position` once per node and rule behind it."""
        machine = self.machine
        used_up = machine.base_gate(position.node).mask & position.exhausted
        if used_up:
            index = _max_calls_rule(machine, _bits(used_up, machine.tools)[0])
        else:
            index = _narrowing_rule(machine, position.node)
        key = (position.node, index if index is not None else -1)
        if key in seen:
            return
        seen.add(key)
        where = f"after {_quote(trace)}" + (" and a reply without a tool call" if text else "")
        if used_up:
            self._max_calls_conflict(position, trace, where, used_up, index)
        elif (
            not text and machine.nodes[position.node].case == "no match" and _strict(machine, index)
        ):
            self.add(
                Severity.WARNING,
                "C108",
                f"strict conditional: after {_quote(trace)}, the output matches no case, so "
                "the run stops at a dead end",
                self.rule_span(index),
                rule=index,
                hint="add a `default`, or silence C108 if the tool can only return the "
                "listed outputs",
                trace=trace,
                position=position,
            )
        else:
            self._no_tool_allowed(position, trace, where, index)

    def _max_calls_conflict(
        self,
        position: Position,
        trace: tuple[str, ...],
        where: str,
        used_up: int,
        index: int | None,
    ) -> None:
        """C107: the only tools the rules allow have used up their max_calls limit."""
        machine = self.machine
        others = ", ".join(_bits(machine.base_gate(position.node).mask, machine.tools))
        forcing = forcing_rule(machine, position.node)
        by = (
            f" (the rule on line {machine.rules[forcing].span.line})" if forcing is not None else ""
        )
        self.add(
            Severity.ERROR,
            "C107",
            f"max_calls conflict: {where}, the rules allow only {others}{by}, and the "
            f"max_calls limit of {', '.join(_bits(used_up, machine.tools))} is used up: no tool "
            "is allowed (dead end)",
            self.rule_span(index),
            rule=index,
            hint="raise the limit, or allow another tool after the limit is reached",
            trace=trace,
            position=position,
        )

    def _no_tool_allowed(
        self, position: Position, trace: tuple[str, ...], where: str, index: int | None
    ) -> None:
        """C101: the rules allow no tool where the run cannot end with a reply."""
        # No tool allowed is a dead end only where a call is forced or a required tool is
        # pending (else the position is answer-only: a reply ends the run there).
        machine = self.machine
        node = machine.nodes[position.node]
        pending = machine.pending_required(position)
        forced = machine.base_gate(position.node).force
        why = (
            "a call is forced"
            if forced
            else f"the run must go on (required before exit: {', '.join(pending)})"
        )
        self.add(
            Severity.ERROR,
            "C101",
            f"dead end: {where}, {why} but no tool is allowed ({node.name})",
            self.rule_span(index, node.last_tool),
            rule=index,
            hint=(
                "allow at least one tool here, or make the tool before it terminal"
                if not pending or forced
                else f"allow {', '.join(pending)} here, or call it earlier in the run"
            ),
            trace=trace,
            position=position,
        )

    # -- traps ----------------------------------------------------------------------

    def _backward(self, seed: bytearray, preds: list[list[int]]) -> bytearray:
        reach = bytearray(seed)
        stack = [p for p in range(len(reach)) if reach[p]]
        while stack:
            target = stack.pop()
            for source in preds[target]:
                if not reach[source]:
                    reach[source] = 1
                    stack.append(source)
        return reach

    def _closure(self, start: int) -> list[int]:
        graph = self.graph
        seen = {start}
        order = [start]
        for position in order:
            lo, hi = graph.edge_start[position], graph.edge_start[position + 1]
            for target in graph.edge_target[lo:hi]:
                if target >= 0 and target not in seen:
                    seen.add(target)
                    order.append(target)
        return sorted(order)

    def _can_finish(self) -> tuple[bytearray, bytearray]:
        """Per position: whether some run from it can end, and whether one can dead-end."""
        graph = self.graph
        size = len(graph)
        preds: list[list[int]] = [[] for _ in range(size)]
        can_end = bytearray(size)
        can_dead = bytearray(size)
        for source in range(size):
            lo, hi = graph.edge_start[source], graph.edge_start[source + 1]
            for target in graph.edge_target[lo:hi]:
                if target >= 0:
                    preds[target].append(source)
                elif target == END:
                    can_end[source] = 1
                else:
                    can_dead[source] = 1
            if graph.text_end[source]:
                can_end[source] = 1
            if graph.text_dead[source]:
                can_dead[source] = 1
        return self._backward(can_end, preds), self._backward(can_dead, preds)

    def traps(self) -> None:
        """C105 and C110: positions from which no run can ever end (nor dead-end)."""
        graph = self.graph
        can_end, can_dead = self._can_finish()
        covered = bytearray(len(graph))
        reported: set[tuple[str, int]] = set()
        for position_id in range(len(graph)):
            if can_end[position_id] or can_dead[position_id] or covered[position_id]:
                continue
            closure = self._closure(position_id)
            called = 0
            for member in closure:
                covered[member] = 1
                called |= graph.allowed[member]
            if not self._required_trap(position_id, called, reported):
                self._endless_trap(position_id, closure, called, reported)

    def _required_trap(self, position_id: int, called: int, reported: set[tuple[str, int]]) -> bool:
        """C105, once per rule: a tool required before exit can no longer be called.
        True when a required tool is uncallable (reported now or before)."""
        machine, graph = self.machine, self.graph
        position = graph.position(position_id)
        uncallable = [
            t for t in machine.pending_required(position) if not called >> machine.tool_index[t] & 1
        ]
        if not uncallable:
            return False
        tool = uncallable[0]
        index = next(
            (
                i
                for i, r in enumerate(_rules(machine))
                if isinstance(r, spec.RequiredBeforeExitRule)
                and tool in spec.as_tuple(r.required_before_exit)
            ),
            None,
        )
        if ("C105", index or -1) in reported:
            return True
        reported.add(("C105", index or -1))
        trace = graph.trace(position_id)
        self.add(
            Severity.ERROR,
            "C105",
            f"{tool!r} is required before exit, but after {_quote(trace)} it can never "
            "be called: the run can never end from there",
            self.rule_span(index),
            rule=index,
            hint=f"make {tool!r} reachable from there, or drop the requirement",
            trace=trace,
            position=position,
        )
        return True

    def _endless_trap(
        self, position_id: int, closure: list[int], called: int, reported: set[tuple[str, int]]
    ) -> None:
        """C110, once per forcing rule: every continuation keeps calling tools forever."""
        machine, graph = self.machine, self.graph
        forced = next((m for m in closure if graph.forced(m)), position_id)
        index = forcing_rule(machine, graph.node(forced))
        if ("C110", index if index is not None else -1) in reported:
            return
        reported.add(("C110", index if index is not None else -1))
        loop = ", ".join(_bits(called, machine.tools)) or "no tool"
        trace = graph.trace(position_id)
        self.add(
            Severity.ERROR,
            "C110",
            f"no way to finish: after {_quote(trace)}, every continuation keeps calling "
            f"{loop} and never reaches a terminal tool or a point where the model may "
            "reply without a tool call",
            self.rule_span(index, graph.last_tool(forced)),
            rule=index,
            hint="allow a terminal tool in the loop, or stop forcing a call somewhere in it",
            trace=trace,
            position=graph.position(position_id),
        )

    # -- coverage -------------------------------------------------------------------

    def unreachable_tools(self) -> None:
        for index, tool in enumerate(self.machine.tools):
            if not self.graph.offered >> index & 1:
                self.add(
                    Severity.WARNING,
                    "C102",
                    f"{tool!r} can never be called: no reachable position allows it",
                    self.at.tool(tool),
                    hint=f"`toolfsm explain FILE {tool} STEPS...` shows which rules forbid it",
                )

    def _tools_never_called(self, names: tuple[str, ...]) -> bool:
        return all(not self.graph.called >> self.machine.tool_index[t] & 1 for t in names)

    def silent_rules(self) -> None:
        """C103: max_calls and required_before_exit rules that no run ever triggers."""
        for index, rule in enumerate(_rules(self.machine)):
            message = None
            if isinstance(rule, spec.MaxCallsRule):
                message = self._silent_max_calls(rule)
            elif isinstance(rule, spec.RequiredBeforeExitRule):
                message = self._silent_required(rule)
            if message:
                self.add(Severity.WARNING, "C103", message, self.at.rule(index), rule=index)

    def _silent_max_calls(self, rule: spec.MaxCallsRule) -> str | None:
        machine, graph = self.machine, self.graph
        names = spec.as_tuple(rule.tools)
        if self._tools_never_called(names):
            return None  # C102 says it
        binding = [t for t in names if machine.max_calls(t) == rule.max_calls]
        if any(graph.exhausted_seen >> machine.tool_index[t] & 1 for t in binding):
            return None
        return (
            f"this max_calls rule never fires: no run can call "
            f"{', '.join(names)} {rule.max_calls} time(s)"
        )

    def _silent_required(self, rule: spec.RequiredBeforeExitRule) -> str | None:
        machine, graph = self.machine, self.graph
        names = spec.as_tuple(rule.required_before_exit)
        if self._tools_never_called(names):
            return None  # C102 and the trap say it
        if any(graph.required_stopped >> machine.tool_index[t] & 1 for t in names):
            return None
        return (
            f"this required_before_exit rule never fires: every run has already "
            f"called {', '.join(names)} whenever it tries to stop"
        )

    def shadowed_cases(self) -> None:
        graph, machine = self.graph, self.machine
        for index, rule in enumerate(_rules(machine)):
            if not isinstance(rule, spec.ConditionalRule):
                continue
            tool_index = machine.tool_index[rule.after]
            chosen = {graph.steps[s].case for s in graph.steps_of[tool_index]}
            keys = list(rule.on_output)
            for case, key in enumerate(keys):
                if case not in chosen:
                    self.add(
                        Severity.WARNING,
                        "C104",
                        f"case {key!r} can never be chosen: an earlier case matches every "
                        f"output it matches",
                        self.at.at(("rules", index, "on_output", key), key=True),
                        rule=index,
                        hint="remove the case or move it before the case that hides it",
                    )

    def unused_children(self) -> None:
        graph, machine = self.graph, self.machine
        offered_after: dict[str | None, int] = {}
        for position_id in range(len(graph)):
            last = graph.last_tool(position_id)
            offered_after[last] = offered_after.get(last, 0) | graph.allowed[position_id]
        for index, rule in enumerate(_rules(machine)):
            if not isinstance(rule, spec.ChildRule) or self._tools_never_called((rule.after,)):
                continue
            children = spec.as_tuple(rule.allow)
            for position_in_list, child in enumerate(children):
                if offered_after.get(rule.after, 0) >> machine.tool_index[child] & 1:
                    continue
                path: tuple[Any, ...] = ("rules", index, "allow")
                if not isinstance(rule.allow, str):
                    path = (*path, position_in_list)
                if rule.after in machine.terminal and rule.after not in offered_after:
                    # No run goes on after the tool: the cause is its terminal rule.
                    why, hint = (
                        f"{rule.after!r} is terminal: every call of it ends the run",
                        f"drop the child rule, or remove {rule.after!r} from the terminal rule",
                    )
                else:
                    why, hint = (
                        "another rule or a used-up max_calls limit always forbids it",
                        None,
                    )
                self.add(
                    Severity.WARNING,
                    "C106",
                    f"{child!r} is allowed after {rule.after!r} but can never be called there "
                    f"({why})",
                    self.at.at(path),
                    rule=index,
                    hint=hint,
                )

    def approval_forced(self) -> None:
        graph, machine = self.graph, self.machine
        approval = 0
        for tool in machine.approval:
            if tool not in machine.approval_when:  # a `when:` may let the call through
                approval |= 1 << machine.tool_index[tool]
        if not approval:
            return
        seen: set[int] = set()
        for position_id in range(len(graph)):
            allowed = graph.allowed[position_id]
            if not (graph.forced(position_id) and allowed and not allowed & ~approval):
                continue
            node = graph.node(position_id)
            if node in seen:
                continue
            seen.add(node)
            index = forcing_rule(machine, node)
            trace = graph.trace(position_id)
            self.add(
                Severity.WARNING,
                "C120",
                f"after {_quote(trace)} a call is forced and every allowed tool "
                f"({', '.join(_bits(allowed, machine.tools))}) needs approval: the run pauses "
                "for a human here every time",
                self.rule_span(index, graph.last_tool(position_id)),
                rule=index,
                trace=trace,
                position=graph.position(position_id),
            )

    def terminal_never_ends(self) -> None:
        graph, machine = self.graph, self.machine
        ends = 0
        for step_id, target in zip(graph.edge_step, graph.edge_target, strict=True):
            if target == END:
                ends |= 1 << graph.steps[step_id].tool_index
        for index, rule in enumerate(_rules(machine)):
            if not isinstance(rule, spec.TerminalRule):
                continue
            for tool in spec.as_tuple(rule.terminal):
                bit = 1 << machine.tool_index[tool]
                if graph.called & bit and not ends & bit:
                    self.add(
                        Severity.WARNING,
                        "C121",
                        f"terminal tool {tool!r} never ends a run: whenever it is called, a "
                        "required-before-exit tool is still pending",
                        self.at.rule(index),
                        rule=index,
                    )

    def run(self) -> list[Finding]:
        if self.graph.truncated:
            self.add(
                Severity.ERROR,
                "C190",
                f"exploration stopped at {len(self.graph)} positions before covering the "
                "state space; dead ends found so far are listed, the other checks were skipped",
                self.at.at(()),
                hint="raise the bound with --max-states (it also bounds the calls tried: "
                f"{EDGES_PER_STATE} per position, fewer with very many tools or counters)",
            )
            self.dead_ends()
            return self.items
        self.dead_ends()
        self.traps()
        self.unreachable_tools()
        self.silent_rules()
        self.shadowed_cases()
        self.unused_children()
        self.approval_forced()
        self.terminal_never_ends()
        return self.items


def find(graph: Graph, source: SourceMap | None = None) -> list[Finding]:
    """Every static finding over an explored graph (see the module docstring for codes)."""
    return _Findings(graph, Locator(graph.machine, source)).run()
