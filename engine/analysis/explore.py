"""Breadth-first exploration of a machine's reachable positions: the graph every check reads.

The model of a run (the "default continuation mode" of the runtime, see the README section
"Checking rule files"):

- a run starts at `machine.start()`;
- at a position the model may call any allowed tool; a conditional tool is explored once per
  output case it can return (one output text per case key, plus one that matches no key), so
  the finite set of steps covers every output the tool could return;
- after a call, `machine.after_call` decides: the run goes on at the new position, stops
  legitimately (a terminal tool with nothing required pending), or stops at a dead end (no
  tool allowed where a call is forced or a required tool is pending; with neither, a position
  with no tool allowed is answer-only: the model's reply ends the run there);
- when the gate does not force a call, the model may instead reply without a tool call:
  `machine.after_text` either ends the run legitimately or, with required-before-exit tools
  pending, keeps it at the same position (a self-loop; the run must still call them);
- in heartbeat mode (`run.continuation: heartbeat`), a call of a tool that no rule continues
  may also end the run (the model did not ask for a heartbeat): one more legitimate end.

Positions are hashable NamedTuples, so the graph is a list of positions, an index, and per
position its outgoing steps. BFS order means the parent pointers give shortest traces.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from engine.language.outputs import compile_cases
from engine.machine import Machine, Position

LIVE_LIMIT = 200_000  # default bound on explored positions (`toolfsm check --max-states`)
# Calls tried per position allowed by the bound (stored as transitions or not): 10,000 tools
# after one child rule have 100 million transitions among 10,001 positions, and 3,000 tools
# called at most once each have 2^3000 positions; the bound keeps time and memory linear in it.
EDGES_PER_STATE = 10

END = -1  # edge target: the call stopped the run legitimately (terminal tool)
DEAD = -2  # edge target: the call stopped the run at a dead end


@dataclass(frozen=True, slots=True)
class Step:
    """One explorable step: a tool and the output text it returns (None: output not used)."""

    tool: str
    tool_index: int
    output: str | None
    case: int | None  # conditional case index picked by `output`; None = no case / no match

    @property
    def label(self) -> str:
        """`tool` or `tool=OUTPUT`, as `toolfsm trace` reads it."""
        return self.tool if self.output is None else f"{self.tool}={self.output}"


def _key_candidates(key: Any, spread: int) -> Iterator[str]:
    """Output texts that match `key` (several spellings, so an earlier string key rarely hides
    all), lazily: the first one almost always does."""
    if isinstance(key, bool):
        base = ["true", "True", "TRUE"] if key else ["false", "False", "FALSE"]
    elif isinstance(key, int | float):
        base = [str(key) if isinstance(key, int) else repr(key)]
    else:
        yield key  # a string key matches exactly one text
        return
    yield from base
    # Leading blanks keep the match for bool and number keys; enough of them always escape
    # the finitely many string keys that come earlier.
    for n in range(1, spread + 2):
        yield " " * n + base[0]


def case_outputs(machine: Machine, tool: str) -> tuple[tuple[str | None, int | None], ...]:
    """Output texts covering every case of `tool`: (text, case index or None for no match).

    A non-conditional tool has one entry (None, None). A case that no output can pick (an
    earlier key matches every text it matches) is left out: it can never be chosen.
    """
    keys = machine.case_keys(tool)
    if not keys:
        return ((None, None),)
    matcher = compile_cases(keys)  # one look-up per text, not one comparison per key
    found: list[tuple[str | None, int | None]] = []
    for index, key in enumerate(keys):
        for text in _key_candidates(key, len(keys)):
            if matcher(text) == index:
                found.append((text, index))
                break
    serial = 0
    while True:
        text = "other" if serial == 0 else f"other-{serial}"
        if matcher(text) is None:
            found.append((text, None))
            return tuple(found)
        serial += 1


@dataclass(frozen=True, slots=True)
class _ToolTable:
    """What one call of a tool does to a packed state (see `_Kernel`)."""

    bit: int  # 1 << tool index
    required: int  # required bit, already shifted into place in the packed key
    count_shift: int  # where its call counter sits in the packed key (-1: not counted)
    count_mask: int
    limit: int
    terminal: bool
    may_end: bool  # heartbeat mode: a call without `request_heartbeat` may end the run
    cases: tuple[tuple[int, int], ...]  # (step id, next node) per explorable output


class _Kernel:
    """The machine's gating tables, read once through its public API, for packed states.

    A live position is packed into one int: node | required << NB | counters << (NB + RB)
    (one bit field per max-called tool). Exploration then costs a few integer operations per
    step instead of building a Position and two verdict objects; `Graph.position` unpacks.
    Tests check that the kernel and `Machine.advance`/`after_call` agree on every step.
    """

    def __init__(
        self, machine: Machine, steps: tuple[Step, ...], steps_of: tuple[tuple[int, ...], ...]
    ) -> None:
        tools = machine.tools
        n_nodes = len(machine.nodes)
        run = getattr(machine.spec, "run", None)
        heartbeat = getattr(run, "continuation", "default") == "heartbeat"
        goes_on = machine.rule_continues | machine.continue_tools | machine.terminal
        self.node_bits = max(1, (n_nodes - 1).bit_length())
        self.required_shift = self.node_bits
        self.counts_shift = self.node_bits + len(tools)
        self.base_mask = tuple(machine.base_gate(n).mask for n in range(n_nodes))
        self.force = tuple(machine.base_gate(n).force for n in range(n_nodes))
        self.required_all = 0
        for tool in machine.required_tools:
            self.required_all |= 1 << machine.tool_index[tool]
        # Counter fields follow the machine's own slot order: max-called tools, declared order.
        self.counted: list[tuple[int, int, int]] = []  # (tool index, shift, limit)
        shift = self.counts_shift
        tables = []
        for index, tool in enumerate(tools):
            limit = machine.max_calls(tool)
            count_shift = count_mask = -1
            if limit is not None:
                count_shift, count_mask = shift, (1 << limit.bit_length()) - 1
                self.counted.append((index, shift, limit))
                shift += limit.bit_length()
            successors = machine.successors(0, tool)
            cases = tuple(
                # No case (or no match) takes the last successor, the default's.
                (s, successors[-1 if (case := steps[s].case) is None else case][1])
                for s in steps_of[index]
            )
            bit = 1 << index
            tables.append(
                _ToolTable(
                    bit=bit,
                    required=(bit << self.required_shift) if self.required_all & bit else 0,
                    count_shift=count_shift,
                    count_mask=count_mask,
                    limit=limit or 0,
                    terminal=tool in machine.terminal,
                    may_end=heartbeat and tool not in goes_on,
                    cases=cases,
                )
            )
        self.tables = tuple(tables)
        if len(machine.start().counts) != len(self.counted):  # pragma: no cover - invariant
            raise AssertionError("machine counters do not match its max_calls tools")

    def plan(self) -> tuple[tuple[Any, ...], ...]:
        """Per tool, its table as a plain tuple (unpacking beats attribute access in the
        hot loop), each case with its next node's allowed mask."""
        base_mask = self.base_mask
        return tuple(
            (
                t.bit,
                t.required,
                t.count_shift,
                t.count_mask,
                t.limit,
                t.terminal,
                t.may_end,
                tuple((step, node, base_mask[node]) for step, node in t.cases),
            )
            for t in self.tables
        )

    def position(self, key: int, exhausted: int) -> Position:
        node = key & ((1 << self.node_bits) - 1)
        required = (key >> self.required_shift) & (
            (1 << self.counts_shift - self.required_shift) - 1
        )
        counts = tuple(
            (key >> shift) & ((1 << limit.bit_length()) - 1) for _, shift, limit in self.counted
        )
        return Position(node, counts, exhausted, required)


@dataclass
class Graph:
    """The explored part of a machine: live positions, their steps, and how each run can end.

    Edges are stored flat: the steps leaving position p are `edge_step[j]` -> `edge_target[j]`
    for j in `range(edge_start[p], edge_start[p + 1])`; a target is a position id, END or DEAD.
    """

    machine: Machine
    steps: tuple[Step, ...]  # every step, by step id
    steps_of: tuple[tuple[int, ...], ...]  # tool index -> its step ids
    keys: list[int]  # packed live positions, in BFS order (0 = start)
    exhausted: list[int]  # per position: mask of tools at their max_calls limit
    parent: list[int]  # BFS tree: the position a position was first reached from (-1: start)
    via: list[int]  # ... and the step id that reached it
    edge_start: list[int]  # len(keys) + 1 offsets into edge_step / edge_target
    edge_step: list[int]
    edge_target: list[int]
    allowed: list[int]  # per position: mask of allowed tools
    text_end: list[bool]  # a reply without a tool call ends the run legitimately here
    text_blocked: list[bool]  # a reply without a tool call is refused (required pending)
    text_dead: list[bool]  # a reply without a tool call stops at a dead end
    truncated: bool  # the bound was hit: positions past it were not explored
    called: int  # mask of tools called on some explored edge
    offered: int  # mask of tools allowed at some explored position
    exhausted_seen: int  # mask of tools whose max_calls limit some run reaches
    required_stopped: int  # mask of required tools pending at some attempt to stop
    kernel: _Kernel

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def edge_count(self) -> int:
        return len(self.edge_target)

    def position(self, position_id: int) -> Position:
        """The machine `Position` of an explored position id."""
        return self.kernel.position(self.keys[position_id], self.exhausted[position_id])

    def node(self, position_id: int) -> int:
        return self.keys[position_id] & ((1 << self.kernel.node_bits) - 1)

    def forced(self, position_id: int) -> bool:
        return self.kernel.force[self.node(position_id)]

    def out(self, position_id: int) -> zip[tuple[int, int]]:
        """(step id, target) pairs of the steps leaving a position."""
        lo, hi = self.edge_start[position_id], self.edge_start[position_id + 1]
        return zip(self.edge_step[lo:hi], self.edge_target[lo:hi], strict=True)

    def path(self, position_id: int) -> list[int]:
        """Step ids of the shortest trace to a position (the BFS tree path)."""
        ids: list[int] = []
        node = position_id
        while node > 0:
            ids.append(self.via[node])
            node = self.parent[node]
        ids.reverse()
        return ids

    def trace(self, position_id: int, *extra_steps: int) -> tuple[str, ...]:
        """The shortest trace to a position, then `extra_steps`, as `toolfsm trace` steps."""
        return self.labels([*self.path(position_id), *extra_steps])

    def labels(self, step_ids: list[int]) -> tuple[str, ...]:
        return tuple(self.steps[s].label for s in step_ids)

    def last_tool(self, position_id: int) -> str | None:
        return self.machine.nodes[self.node(position_id)].last_tool


def all_steps(machine: Machine) -> tuple[tuple[Step, ...], tuple[tuple[int, ...], ...]]:
    """Every step of the machine and, per tool index, the ids of its steps."""
    steps: list[Step] = []
    steps_of: list[tuple[int, ...]] = []
    for index, tool in enumerate(machine.tools):
        ids = []
        for text, case in case_outputs(machine, tool):
            ids.append(len(steps))
            steps.append(Step(tool, index, text, case))
        steps_of.append(tuple(ids))
    return tuple(steps), tuple(steps_of)


def _cut(
    explored: int,
    keys: list[int],
    exhausted: list[int],
    parent: list[int],
    via: list[int],
    edge_start: list[int],
    edge_step: list[int],
    edge_target: list[int],
) -> None:
    """Drop the positions from `explored` on (found, never expanded) and the edges into them:
    a no-op unless the exploration stopped at the edge bound."""
    if explored == len(keys):
        return
    for column in (keys, exhausted, parent, via):
        del column[explored:]
    steps, targets = edge_step[:], edge_target[:]
    edge_step.clear()
    edge_target.clear()
    for position in range(explored):
        lo, hi = edge_start[position], edge_start[position + 1]
        edge_start[position] = len(edge_target)
        for j in range(lo, hi):
            if targets[j] < explored:  # END and DEAD are negative: kept
                edge_step.append(steps[j])
                edge_target.append(targets[j])
    edge_start[explored] = len(edge_target)
    del edge_start[explored + 1 :]


def _text_verdicts(
    kernel: _Kernel, keys: list[int], allowed_of: list[int]
) -> tuple[list[bool], list[bool], list[bool], int]:
    """Per explored position, what a reply without a tool call does: ends the run, is refused
    (required tools pending, some tool allowed) or dead-ends; and the required tools pending
    where a reply tries to stop the run."""
    force, node_mask = kernel.force, (1 << kernel.node_bits) - 1
    required_shift = kernel.required_shift
    required_mask = kernel.required_all << required_shift
    text_end: list[bool] = []
    text_blocked: list[bool] = []
    text_dead: list[bool] = []
    end, blocked, dead = text_end.append, text_blocked.append, text_dead.append
    stopped = 0
    for key, allowed in zip(keys, allowed_of, strict=False):  # keys: also the unexplored
        if force[key & node_mask]:  # a call is forced: no reply at all
            end(False)
            blocked(False)
            dead(False)
            continue
        pending = (required_mask & ~key) >> required_shift
        stopped |= pending
        end(not pending)
        blocked(bool(pending and allowed))
        dead(bool(pending) and not allowed)
    return text_end, text_blocked, text_dead, stopped


def explore(
    machine: Machine, *, max_states: int = LIVE_LIMIT, max_edges: int | None = None
) -> Graph:
    """Explore every reachable position breadth first, up to `max_states` positions and
    `max_edges` transitions (default: EDGES_PER_STATE per allowed position); past either
    bound the graph is `truncated` and holds only fully explored positions."""
    edge_bound = max_states * EDGES_PER_STATE if max_edges is None else max_edges
    steps, steps_of = all_steps(machine)
    kernel = _Kernel(machine, steps, steps_of)
    base_mask = kernel.base_mask
    force = kernel.force
    node_mask = (1 << kernel.node_bits) - 1
    required_shift = kernel.required_shift
    required_all = kernel.required_all
    required_mask = required_all << required_shift
    start_key = 0  # node 0, nothing required called, every counter at zero
    keys = [start_key]
    exhausted = [0]
    index = {start_key: 0}
    parent = [-1]
    via = [-1]
    edge_start: list[int] = []
    edge_step: list[int] = []
    edge_target: list[int] = []
    allowed_of: list[int] = []
    called = offered = exhausted_seen = required_stopped = 0
    truncated = False
    add_step, add_target = edge_step.append, edge_target.append
    index_get = index.get
    plan = kernel.plan()
    current = 0
    # Calls tried so far (stored as edges or not): what the edge bound limits. A packed key of
    # many bits costs that many machine words per operation, so a call counts once per word.
    work = 0
    while current < len(keys):
        key = keys[current]
        node = key & node_mask
        ex = exhausted[current]
        allowed = base_mask[node] & ~ex
        work += allowed.bit_count() * (1 + (key.bit_length() >> 6))
        if work > edge_bound:
            truncated = True
            break
        allowed_of.append(allowed)
        offered |= allowed
        called |= allowed
        edge_start.append(len(edge_target))
        rest = key & ~node_mask
        mask = allowed
        while mask:
            low = mask & -mask
            mask ^= low
            bit, required, count_shift, count_mask, limit, terminal, may_end, cases = plan[
                low.bit_length() - 1
            ]
            new_rest = rest | required
            new_ex = ex
            if count_shift >= 0:
                count = (rest >> count_shift) & count_mask
                if count < limit:
                    new_rest += 1 << count_shift
                    if count + 1 >= limit:
                        new_ex = ex | bit
                        exhausted_seen |= bit
            if terminal or may_end:
                # The call may end the run (a terminal tool; in heartbeat mode, the same call
                # without a heartbeat, an END edge beside the continuing one) unless required
                # tools are pending: then it is refused and the run goes on.
                pending = (required_mask & ~new_rest) >> required_shift
                if pending:
                    required_stopped |= pending
                else:
                    for step_id, _, _ in cases:
                        add_step(step_id)
                        add_target(END)
                    if terminal:
                        continue
            for step_id, next_node, next_mask in cases:
                # Nothing allowed next: a dead end where a call is forced or a required tool
                # is pending; otherwise an answer-only position (a reply ends the run there).
                if not next_mask & ~new_ex and (force[next_node] or required_mask & ~new_rest):
                    if not force[next_node]:  # the run tries to stop with required pending
                        required_stopped |= (required_mask & ~new_rest) >> required_shift
                    add_step(step_id)
                    add_target(DEAD)
                    continue
                new_key = new_rest | next_node
                target = index_get(new_key)
                if target is None:
                    if len(keys) >= max_states:
                        truncated = True
                        continue
                    target = len(keys)
                    index[new_key] = target
                    keys.append(new_key)
                    exhausted.append(new_ex)
                    parent.append(current)
                    via.append(step_id)
                add_step(step_id)
                add_target(target)
        current += 1
    edge_start.append(len(edge_target))
    text_end, text_blocked, text_dead, text_stopped = _text_verdicts(kernel, keys, allowed_of)
    required_stopped |= text_stopped
    # Stopped at the edge bound: keep the explored positions only.
    _cut(current, keys, exhausted, parent, via, edge_start, edge_step, edge_target)
    return Graph(
        machine=machine,
        steps=steps,
        steps_of=steps_of,
        keys=keys,
        exhausted=exhausted,
        parent=parent,
        via=via,
        edge_start=edge_start,
        edge_step=edge_step,
        edge_target=edge_target,
        allowed=allowed_of,
        text_end=text_end,
        text_blocked=text_blocked,
        text_dead=text_dead,
        truncated=truncated,
        called=called,
        offered=offered,
        exhausted_seen=exhausted_seen,
        required_stopped=required_stopped,
        kernel=kernel,
    )


GRAPH_LIMIT = 50_000  # positions explored to find the transitions runs take (graph, simulate)


def taken_transitions(
    machine: Machine, *, max_states: int = GRAPH_LIMIT
) -> frozenset[tuple[str, str, str]] | None:
    """(source node, tool, destination node) of every call some run can make, counting the
    calls that stop the run; None when the exploration bound is hit (then the drawing falls
    back to the machine's static edges)."""
    graph = explore(machine, max_states=max_states)
    if graph.truncated:
        return None
    names = [node.name for node in machine.nodes]
    taken: set[tuple[str, str, str]] = set()
    for source in range(len(graph)):
        name = names[graph.node(source)]
        for step_id, target in graph.out(source):
            step = graph.steps[step_id]
            if target >= 0:
                dest = graph.node(target)
            else:  # the call stopped the run: where it went, from the machine itself
                dest = machine.advance(graph.position(source), step.tool, step.output).node
            taken.add((name, step.tool, names[dest]))
    return frozenset(taken)
