"""The compiled machine as a `transitions` state machine, for inspection and drawing.

This is the only module that imports `transitions`. It is never on the per-step path: the
gating tables of `engine.machine` answer there in O(1); this view exists so that the
machine's structure (states, labelled transitions, the initial state) can be inspected with
a well-known library and exported as markup for the diagram renderers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transitions.extensions.markup import MarkupMachine

from engine.machine import Machine


@dataclass(frozen=True)
class Edge:
    source: str
    dest: str
    tool: str
    case: str | None  # output case label for conditional tools


def edges(machine: Machine) -> list[Edge]:
    """Every transition between nodes (max_calls limits ignored: they only remove edges)."""
    result: list[Edge] = []
    for index, node in enumerate(machine.nodes):
        for tool in machine.base_gate(index).allowed:
            for case, dest in machine.successors(index, tool):
                result.append(Edge(node.name, machine.nodes[dest].name, tool, case))
    return result


def reachable_nodes(machine: Machine) -> list[str]:
    """Node names reachable from the start, in breadth-first order."""
    by_source: dict[str, list[str]] = {}
    for edge in edges(machine):
        by_source.setdefault(edge.source, []).append(edge.dest)
    order = [machine.nodes[0].name]
    seen = set(order)
    for name in order:
        for dest in by_source.get(name, []):
            if dest not in seen:
                seen.add(dest)
                order.append(dest)
    return order


def to_transitions(machine: Machine, *, only_reachable: bool = True) -> MarkupMachine:
    """A `transitions` machine with one state per node and one transition per edge."""
    keep = set(reachable_nodes(machine)) if only_reachable else {n.name for n in machine.nodes}
    states = [n.name for n in machine.nodes if n.name in keep]
    transitions = [
        {
            "trigger": edge.tool if edge.case is None else f"{edge.tool}={edge.case}",
            "source": edge.source,
            "dest": edge.dest,
        }
        for edge in edges(machine)
        if edge.source in keep
    ]
    # model=[]: no model object, so tool names can never clash with model attributes.
    return MarkupMachine(
        model=[], states=states, transitions=transitions, initial=states[0], auto_transitions=False
    )


def markup(machine: Machine, *, only_reachable: bool = True) -> dict[str, Any]:
    """The machine's markup: {'initial', 'states': [{'name'}], 'transitions': [...]}, plus tags."""
    data: dict[str, Any] = dict(to_transitions(machine, only_reachable=only_reachable).markup)
    terminal_nodes = {
        n.name for n in machine.nodes if n.last_tool is not None and n.last_tool in machine.terminal
    }
    dead = {n.name for i, n in enumerate(machine.nodes) if machine.base_gate(i).dead_end}
    forced = {n.name for i, n in enumerate(machine.nodes) if machine.base_gate(i).force}
    for state in data["states"]:
        tags = []
        if state["name"] in terminal_nodes:
            tags.append("terminal")
        if state["name"] in dead:
            tags.append("dead_end")
        if state["name"] in forced:
            tags.append("forced")
        state["tags"] = tags
    return data
