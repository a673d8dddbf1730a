"""Checks across agents: the call graph of YAML-native agent tools (`toolfsm check` given
several agent files or a folder).

An agent tool declared with `agents:` names its callees by tags, so the graph is known before
any run: an edge from the caller to every agent its query matches (the caller itself left
out, as at run time). Findings (C13x), at the tool's declaration:

- C130 (error): the query matches no agent;
- C131 (warning): it matches more agents than `max_callees` (the rest are never messaged);
- C132 (error): a cycle of agent calls (at run time the call back into a caller is refused);
- C133 (error): a call that nests deeper than the caller's `run.max_agent_depth`;
- C134 (warning): a callee that can pause for approval (the caller then waits on a human).

The built-in tools choose their callees at run time (tags or an id in the model's arguments),
so they add no edge; a note says so. Each agent that calls others gets a note with the bound
on the model calls of its whole call tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import Diagnostic, Severity
from engine.language.agenttools import BUILTIN_AGENT_TOOLS
from engine.language.loader import RuleFile
from engine.language.spec import AgentSpec, MaxCallsRule, RequiresApprovalRule, ToolDecl

__all__ = ["AgentGraph", "check_agents"]


@dataclass(frozen=True, slots=True)
class _Edge:
    tool: str
    index: int  # the tool's place under `tools:`
    callees: tuple[str, ...]  # matched agents, in the order of their names


@dataclass
class AgentGraph:
    """The agents checked together and their agent-tool edges."""

    files: dict[str, RuleFile]  # agent name -> its file
    edges: dict[str, list[_Edge]]

    def spec(self, name: str) -> AgentSpec:
        spec = self.files[name].spec
        assert spec is not None
        return spec


def _tools(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _build(rule_files: Sequence[RuleFile]) -> AgentGraph:
    files: dict[str, RuleFile] = {}
    for rule_file in rule_files:
        if rule_file.ok and rule_file.spec is not None:
            files.setdefault(rule_file.spec.agent, rule_file)
    tags = {name: set(f.spec.tags) for name, f in files.items() if f.spec is not None}
    edges: dict[str, list[_Edge]] = {}
    for name, rule_file in files.items():
        assert rule_file.spec is not None
        for index, decl in enumerate(rule_file.spec.tool_decls()):
            if decl.agents is not None:
                matched = _matches(name, decl, tags)
                edges.setdefault(name, []).append(_Edge(decl.name, index, matched))
    return AgentGraph(files, edges)


def _matches(caller: str, decl: ToolDecl, tags: dict[str, set[str]]) -> tuple[str, ...]:
    """The agents `decl`'s query matches, the caller left out, in the order of their names."""
    assert decl.agents is not None
    every, some = set(decl.agents.match_all), set(decl.agents.match_some)
    return tuple(
        other
        for other in sorted(tags)
        if other != caller and every <= tags[other] and (not some or some & tags[other])
    )


def _diag(
    graph: AgentGraph, agent: str, edge: _Edge, severity: Severity, code: str, message: str
) -> Diagnostic:
    span = graph.files[agent].source.span(("tools", edge.index, "agents"))
    return Diagnostic(severity, code, message, span)


def _approval_tools(spec: AgentSpec) -> list[str]:
    found: list[str] = []
    for rule in spec.rules:
        if isinstance(rule, RequiresApprovalRule):
            found += _tools(rule.requires_approval)
    return found


def _local(graph: AgentGraph) -> list[Diagnostic]:
    """C130, C131, C134: what one agent tool's matches say."""
    found: list[Diagnostic] = []
    for agent, edges in graph.edges.items():
        for edge in edges:
            decl = graph.spec(agent).tool_decls()[edge.index]
            assert decl.agents is not None
            if not edge.callees:
                query = f"match_all {decl.agents.match_all}, match_some {decl.agents.match_some}"
                found.append(
                    _diag(
                        graph,
                        agent,
                        edge,
                        Severity.ERROR,
                        "C130",
                        f"{edge.tool}: its tag query ({query}) matches no agent among the "
                        f"{len(graph.files)} checked",
                    )
                )
            elif len(edge.callees) > decl.agents.max_callees:
                left = ", ".join(edge.callees[decl.agents.max_callees :])
                found.append(
                    _diag(
                        graph,
                        agent,
                        edge,
                        Severity.WARNING,
                        "C131",
                        f"{edge.tool}: {len(edge.callees)} agents match, more than its "
                        f"max_callees ({decl.agents.max_callees}); never messaged: {left}",
                    )
                )
            for callee in edge.callees:
                held = _approval_tools(graph.spec(callee))
                if held:
                    found.append(
                        _diag(
                            graph,
                            agent,
                            edge,
                            Severity.WARNING,
                            "C134",
                            f"{edge.tool}: callee {callee} can pause for approval "
                            f"({', '.join(held)}): {agent} then waits on a human",
                        )
                    )
    return found


def _paths(graph: AgentGraph) -> list[Diagnostic]:
    """C132 (cycles) and C133 (nesting deeper than a caller allows), from every agent."""
    found: list[Diagnostic] = []
    seen: set[tuple[str, str, str]] = set()

    def report(agent: str, edge: _Edge, code: str, message: str) -> None:
        # Once per (code, caller, tool): many paths can reach the same call.
        if (code, agent, edge.tool) not in seen:
            seen.add((code, agent, edge.tool))
            found.append(_diag(graph, agent, edge, Severity.ERROR, code, message))

    def walk(agent: str, depth: int, path: tuple[str, ...]) -> None:
        for edge in graph.edges.get(agent, ()):
            limit = graph.spec(agent).run.max_agent_depth
            for callee in edge.callees:
                chain = " -> ".join((*path, callee))
                if callee in path:
                    report(
                        agent,
                        edge,
                        "C132",
                        f"{edge.tool}: agent calls go round in a cycle: {chain}",
                    )
                elif depth + 1 > limit:
                    report(
                        agent,
                        edge,
                        "C133",
                        f"{edge.tool}: {chain} nests {depth + 1} deep, deeper than "
                        f"{agent}'s run.max_agent_depth ({limit}); the call is refused",
                    )
                else:
                    walk(callee, depth + 1, (*path, callee))

    for root in graph.files:
        walk(root, 0, (root,))
    return found


def _calls_per_run(spec: AgentSpec, decl: ToolDecl) -> int | None:
    """How often one run of `spec` can call `decl` (None: no bound)."""
    limits = [
        rule.max_calls
        for rule in spec.rules
        if isinstance(rule, MaxCallsRule) and decl.name in _tools(rule.tools)
    ]
    if limits:
        return min(limits)
    return None if spec.run.parallel_tool_calls else spec.run.max_steps


def _bound(graph: AgentGraph, agent: str, path: tuple[str, ...] = ()) -> int | None:
    """The most model calls of `agent`'s run and every run under it (None: no bound)."""
    spec = graph.spec(agent)
    total = spec.run.max_steps
    decls = spec.tool_decls()
    for edge in graph.edges.get(agent, ()):
        calls = _calls_per_run(spec, decls[edge.index])
        below = 0
        for callee in edge.callees:
            if callee in path or callee == agent:
                continue
            sub = _bound(graph, callee, (*path, agent))
            if sub is None:
                return None
            below += sub
        if below:
            if calls is None:
                return None
            total += calls * below
    return total


def _notes(graph: AgentGraph) -> list[str]:
    notes: list[str] = []
    for agent, rule_file in graph.files.items():
        assert rule_file.spec is not None
        built_in = [d.name for d in rule_file.spec.tool_decls() if d.name in BUILTIN_AGENT_TOOLS]
        if built_in:
            notes.append(
                f"{rule_file.path}: note: {', '.join(built_in)} choose their callees at run "
                "time (from the model's arguments): not in the call graph"
            )
        if not any(edge.callees for edge in graph.edges.get(agent, ())):
            continue
        bound = _bound(graph, agent)
        if bound is None:
            notes.append(
                f"{rule_file.path}: note: no bound on the model calls of {agent}'s call tree: "
                "an agent tool has no max_calls rule and the model may call it several times "
                "per reply (run.parallel_tool_calls)"
            )
        else:
            notes.append(
                f"{rule_file.path}: note: {agent}'s call tree makes at most {bound} model "
                "call(s) (its own max_steps and its callees', times the calls it can make)"
            )
    return notes


def check_agents(rule_files: Sequence[RuleFile]) -> tuple[list[Diagnostic], list[str]]:
    """The cross-agent findings of the valid files among `rule_files`, and the notes (the
    call-tree bounds) `toolfsm check` prints."""
    graph = _build(rule_files)
    return _local(graph) + _paths(graph), _notes(graph)
