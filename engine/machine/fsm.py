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
from engine.machine import Machine, Node


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

# (source node, tool, destination node) of the calls some run can make: from the explored
# positions (`engine.analysis.explore.taken_transitions`), which see max_calls counters.
Taken = frozenset[tuple[str, str, str]]


def _run_goes_on_after(machine: Machine, node: Node) -> bool:
    """Whether a run can go on from `node`: not after a terminal tool, unless a required tool
    other than it can still be pending then (a terminal call continues while one is)."""
    last = node.last_tool
    if last is None or last not in machine.terminal:
        return True
    return any(tool != last for tool in machine.required_tools)


def _sources(machine: Machine, only_reachable: bool) -> list[int]:
    """The nodes to draw: reachable ones in breadth-first order, or all.

    A tool leads to the same nodes from anywhere, so each tool is expanded once: linear in
    tools and nodes, however many edges there are.
    """
    if not only_reachable:
        return list(range(len(machine.nodes)))
    order, seen, expanded = [0], {0}, 0
    for index in order:
        if not _run_goes_on_after(machine, machine.nodes[index]):
            continue  # every run has stopped here: nothing leaves this node
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
    machine: Machine,
    sources: list[int] | None = None,
    *,
    limit: int | None = None,
    taken: Taken | None = None,
) -> list[Edge]:
    """Every transition a run can take out of `sources` (default: every node): none leaves a
    terminal tool's node, where every run has stopped; with `taken`, only those transitions
    (else max_calls limits are ignored: they only remove edges). `DiagramTooLarge` as soon as
    there are more than `limit`."""
    result: list[Edge] = []
    nodes = range(len(machine.nodes)) if sources is None else sources
    for index in nodes:
        node = machine.nodes[index]
        if not _run_goes_on_after(machine, node):
            continue
        for tool in machine.base_gate(index).allowed:
            for case, dest in machine.successors(index, tool):
                edge = Edge(node.name, machine.nodes[dest].name, tool, case)
                if taken is None or (edge.source, tool, edge.dest) in taken:
                    result.append(edge)
            if limit is not None and len(result) > limit:
                raise DiagramTooLarge(len(result), len(nodes), limit)
    return result


def _taken_sources(machine: Machine, taken: Taken) -> list[int]:
    """The nodes runs reach through `taken` transitions, in breadth-first order."""
    after: dict[str, list[str]] = {}
    for source, _, dest in sorted(taken):
        after.setdefault(source, []).append(dest)
    order = [machine.nodes[0].name]
    seen = set(order)
    for name in order:
        for dest in after.get(name, ()):
            if dest not in seen:
                seen.add(dest)
                order.append(dest)
    return [machine.node_index(name) for name in order]


def reachable_nodes(machine: Machine, taken: Taken | None = None) -> list[str]:
    """Node names reachable from the start, in breadth-first order."""
    sources = _sources(machine, True) if taken is None else _taken_sources(machine, taken)
    return [machine.nodes[i].name for i in sources]


def to_transitions(
    machine: Machine,
    *,
    only_reachable: bool = True,
    limit: int | None = None,
    taken: Taken | None = None,
) -> MarkupMachine:
    """A `transitions` machine with one state per node and one transition per edge."""
    sources = (
        _taken_sources(machine, taken)
        if only_reachable and taken is not None
        else _sources(machine, only_reachable)
    )
    keep = {machine.nodes[i].name for i in sources}
    states = [n.name for n in machine.nodes if n.name in keep]
    transitions = [
        {
            "trigger": edge.tool if edge.case is None else f"{edge.tool}={edge.case}",
            "source": edge.source,
            "dest": edge.dest,
        }
        for edge in edges(machine, sources, limit=limit, taken=taken)
    ]
    # model=[]: no model object, so tool names can never clash with model attributes.
    return MarkupMachine(
        model=[], states=states, transitions=transitions, initial=states[0], auto_transitions=False
    )


def markup(
    machine: Machine,
    *,
    only_reachable: bool = True,
    limit: int | None = MAX_TRANSITIONS,
    taken: Taken | None = None,
) -> dict[str, Any]:
    """The machine's markup: {'initial', 'states': [{'name'}], 'transitions': [...]}, plus tags;
    `DiagramTooLarge` past `limit` transitions (None: no bound). With `taken`, only the
    transitions runs take (`engine.analysis.explore.taken_transitions`)."""
    drawn = to_transitions(machine, only_reachable=only_reachable, limit=limit, taken=taken)
    data: dict[str, Any] = dict(drawn.markup)
    tags = _node_tags(machine)
    for state in data["states"]:
        state["tags"] = [tag for tag, names in tags if state["name"] in names]
    return data


def _node_tags(machine: Machine) -> tuple[tuple[str, set[str]], ...]:
    """Each state tag, in the order states list them, with the names of the nodes it marks."""
    gates = [machine.base_gate(i) for i in range(len(machine.nodes))]
    names = [n.name for n in machine.nodes]
    terminal = {
        n.name for n in machine.nodes if n.last_tool is not None and n.last_tool in machine.terminal
    }
    return (
        ("terminal", terminal),
        ("dead_end", {name for name, g in zip(names, gates, strict=True) if g.dead_end}),
        # No tool allowed, none forced: the model may only answer, which ends the run.
        ("answer_only", {name for name, g in zip(names, gates, strict=True) if g.answer_only}),
        ("forced", {name for name, g in zip(names, gates, strict=True) if g.force}),
    )
