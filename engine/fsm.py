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

from engine.errors import ToolfsmError
from engine.machine import Machine


@dataclass(frozen=True)
class Edge:
    source: str
    dest: str
    tool: str
    case: str | None  # output case label for conditional tools


class DiagramTooLarge(ToolfsmError):
    """The diagram would have more transitions than the bound: nobody could read it, and
    building it could exhaust memory (10,000 tools after one child rule: 100 million edges)."""

    def __init__(self, transitions: int, states: int, limit: int) -> None:
        self.transitions, self.states, self.limit = transitions, states, limit
        super().__init__(
            f"the diagram has more than {limit} transitions (at least {transitions}, between "
            f"{states} states); it is not drawn"
        )


MAX_TRANSITIONS = 10_000  # default bound on drawn transitions (`toolfsm graph --max-transitions`)


def _sources(machine: Machine, only_reachable: bool) -> list[int]:
    """The nodes to draw: reachable ones in breadth-first order, or all.

    A tool leads to the same nodes from anywhere, so each tool is expanded once: linear in
    tools and nodes, however many edges there are.
    """
    if not only_reachable:
        return list(range(len(machine.nodes)))
    order, seen, expanded = [0], {0}, 0
    for index in order:
        fresh = machine.base_gate(index).mask & ~expanded
        expanded |= fresh
        while fresh:
            low = fresh & -fresh
            fresh ^= low
            for _, dest in machine.successors(index, machine.tools[low.bit_length() - 1]):
                if dest not in seen:
                    seen.add(dest)
                    order.append(dest)
    return order


def edges(
    machine: Machine, sources: list[int] | None = None, *, limit: int | None = None
) -> list[Edge]:
    """Every transition out of `sources` (default: every node), max_calls limits ignored (they
    only remove edges); `DiagramTooLarge` as soon as there are more than `limit`."""
    result: list[Edge] = []
    nodes = range(len(machine.nodes)) if sources is None else sources
    for index in nodes:
        node = machine.nodes[index]
        for tool in machine.base_gate(index).allowed:
            for case, dest in machine.successors(index, tool):
                result.append(Edge(node.name, machine.nodes[dest].name, tool, case))
            if limit is not None and len(result) > limit:
                raise DiagramTooLarge(len(result), len(nodes), limit)
    return result


def reachable_nodes(machine: Machine) -> list[str]:
    """Node names reachable from the start, in breadth-first order."""
    return [machine.nodes[i].name for i in _sources(machine, True)]


def to_transitions(
    machine: Machine, *, only_reachable: bool = True, limit: int | None = None
) -> MarkupMachine:
    """A `transitions` machine with one state per node and one transition per edge."""
    sources = _sources(machine, only_reachable)
    keep = {machine.nodes[i].name for i in sources}
    states = [n.name for n in machine.nodes if n.name in keep]
    transitions = [
        {
            "trigger": edge.tool if edge.case is None else f"{edge.tool}={edge.case}",
            "source": edge.source,
            "dest": edge.dest,
        }
        for edge in edges(machine, sources, limit=limit)
    ]
    # model=[]: no model object, so tool names can never clash with model attributes.
    return MarkupMachine(
        model=[], states=states, transitions=transitions, initial=states[0], auto_transitions=False
    )


def markup(
    machine: Machine, *, only_reachable: bool = True, limit: int | None = MAX_TRANSITIONS
) -> dict[str, Any]:
    """The machine's markup: {'initial', 'states': [{'name'}], 'transitions': [...]}, plus tags;
    `DiagramTooLarge` past `limit` transitions (None: no bound)."""
    machine_markup = to_transitions(machine, only_reachable=only_reachable, limit=limit).markup
    data: dict[str, Any] = dict(machine_markup)
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
