"""Hypothesis strategies over a machine: valid traces, invalid steps, complete runs.

Every strategy draws its steps from the machine itself, so what it generates respects every
rule by construction (or, for `invalid_steps`, breaks exactly one). Lengths are drawn first
and shrink towards 0, and choices shrink towards the first allowed tool, so failing examples
shrink to short traces.
"""

from __future__ import annotations

from dataclasses import dataclass

try:
    from hypothesis import strategies as st
except ModuleNotFoundError as exc:  # an optional part: say which extra to install
    from engine.errors import MissingExtraError

    raise MissingExtraError("engine.testing (Hypothesis strategies)", "testing") from exc

from engine.analysis.explore import END, Graph, case_outputs, explore
from engine.errors import ToolfsmError
from engine.machine import Machine, Position, StopReason
from engine.machine.trace import TraceStep

REPLY = None  # marks "the model replies without a tool call" among a run's final choices


@dataclass(frozen=True)
class Run:
    """A complete run: its steps (all allowed) and how it stopped (terminal tool or reply)."""

    steps: tuple[TraceStep, ...]
    stop: StopReason
    position: Position  # where the run stands when it stops

    @property
    def tools(self) -> tuple[str, ...]:
        return tuple(step.tool for step in self.steps)


@dataclass(frozen=True)
class InvalidStep:
    """A valid prefix, then a call the rules forbid at the position the prefix leads to."""

    prefix: tuple[TraceStep, ...]
    step: TraceStep
    position: Position  # where the prefix leads (the forbidden call is judged here)
    allowed: tuple[str, ...]


def _outputs(machine: Machine) -> dict[str, list[str | None]]:
    return {t: [text for text, _ in case_outputs(machine, t)] for t in machine.tools}


def traces(machine: Machine, *, max_length: int = 20) -> st.SearchStrategy[list[TraceStep]]:
    """Valid traces: each step allowed where it is taken, outputs covering every output case.

    A trace stops early when the run stops (terminal tool or dead end) or no tool is allowed
    (an answer-only position: the run ends with the reply there); it may also be a
    prefix of a longer run. Replay one with `engine.machine.trace.trace(machine, steps)`.
    """
    outputs = _outputs(machine)

    @st.composite
    def build(draw: st.DrawFn) -> list[TraceStep]:
        length = draw(st.integers(0, max_length))
        position = machine.start()
        steps: list[TraceStep] = []
        while len(steps) < length:
            allowed = machine.gate(position).allowed
            if not allowed:
                break
            tool = draw(st.sampled_from(allowed))
            output = draw(st.sampled_from(outputs[tool]))
            position = machine.advance(position, tool, output)
            steps.append(TraceStep(tool, output))
            if not machine.after_call(position, tool).continues:
                break
        return steps

    return build()


def _distances(graph: Graph, cost: list[int | None]) -> list[int]:
    """Fewest steps from each live position to a goal; `cost` is a goal's own cost (0 or 1)
    or None for a position that is no goal. A large number means never."""
    preds = _predecessors(graph)
    dist = [1 << 30 if c is None else c for c in cost]
    level = [p for p, c in enumerate(cost) if c == 0]
    following = [p for p, c in enumerate(cost) if c == 1]  # goals that cost one step: level 1
    depth = 0
    while level or following:
        for target in level:
            for source in preds[target]:
                if dist[source] > depth + 1:
                    dist[source] = depth + 1
                    following.append(source)
        level, following = following, []
        depth += 1
    return dist


def _predecessors(graph: Graph) -> list[list[int]]:
    """Per live position, the live positions with a step into it."""
    preds: list[list[int]] = [[] for _ in range(len(graph))]
    for source in range(len(graph)):
        for _, target in graph.out(source):
            if target >= 0:
                preds[target].append(source)
    return preds


def _steered(
    draw: st.DrawFn,
    graph: Graph,
    dist: list[int],
    cost: list[int | None],
    max_length: int,
) -> tuple[list[int], int]:
    """A random walk over live positions, sure to reach a goal whose cost fits in the budget."""
    length = draw(st.integers(0, max_length))
    position = 0
    path: list[int] = []
    while True:
        remaining = max_length - len(path)
        options = [
            (step, target)
            for step, target in graph.out(position)
            if target >= 0 and dist[target] <= remaining - 1
        ]
        here = cost[position]
        if here is not None and here <= remaining and (len(path) >= length or not options):
            return path, position
        step, position = draw(st.sampled_from(options))
        path.append(step)


def _step(graph: Graph, step_id: int) -> TraceStep:
    step = graph.steps[step_id]
    return TraceStep(step.tool, step.output)


def complete_runs(machine: Machine, *, max_length: int = 20) -> st.SearchStrategy[Run]:
    """Runs that end legitimately (terminal tool, or a reply where one ends the run).

    `max_length` bounds the tool calls of a run, the terminal call included; `ToolfsmError`
    when no run can end within it.
    """
    graph = explore(machine)
    replies = graph.text_end
    terminals = [
        [step for step, target in graph.out(p) if target == END] for p in range(len(graph))
    ]
    cost: list[int | None] = [
        0 if replies[p] else (1 if terminals[p] else None) for p in range(len(graph))
    ]
    dist = _distances(graph, cost)
    if dist[0] > max_length:
        raise ToolfsmError(f"no run of {machine.agent!r} can end within {max_length} call(s)")

    @st.composite
    def build(draw: st.DrawFn) -> Run:
        path, position = _steered(draw, graph, dist, cost, max_length)
        finals: list[int | None] = [REPLY] if replies[position] else []
        if len(path) < max_length:
            finals += terminals[position]
        final = draw(st.sampled_from(finals))
        steps = [_step(graph, s) for s in path]
        where = graph.position(position)
        if final is REPLY:
            return Run(tuple(steps), StopReason.END_TURN, where)
        step = _step(graph, final)
        return Run(
            (*steps, step),
            StopReason.TERMINAL_TOOL,
            machine.advance(where, step.tool, step.output),
        )

    return build()


def invalid_steps(machine: Machine, *, max_length: int = 20) -> st.SearchStrategy[InvalidStep]:
    """A valid prefix (the run still going) followed by one call the rules forbid there.

    `ToolfsmError` when no reachable position forbids any tool (nothing to generate).
    """
    graph = explore(machine)
    everything = (1 << len(machine.tools)) - 1
    cost: list[int | None] = [
        0 if graph.allowed[p] != everything else None for p in range(len(graph))
    ]
    dist = _distances(graph, cost)
    if dist[0] > max_length:
        raise ToolfsmError(
            f"no position of {machine.agent!r} within {max_length} call(s) forbids a tool"
        )

    @st.composite
    def build(draw: st.DrawFn) -> InvalidStep:
        path, position = _steered(draw, graph, dist, cost, max_length)
        allowed = graph.allowed[position]
        forbidden = [t for i, t in enumerate(machine.tools) if not allowed >> i & 1]
        tool = draw(st.sampled_from(forbidden))
        where = graph.position(position)
        return InvalidStep(
            tuple(_step(graph, s) for s in path),
            TraceStep(tool, None),
            where,
            machine.gate(where).allowed,
        )

    return build()


def positions(machine: Machine, *, max_length: int = 20) -> st.SearchStrategy[Position]:
    """Positions reachable by valid traces (the run may have stopped there)."""

    def replay(steps: list[TraceStep]) -> Position:
        position = machine.start()
        for step in steps:
            position = machine.advance(position, step.tool, step.output)
        return position

    return traces(machine, max_length=max_length).map(replay)


__all__ = [
    "InvalidStep",
    "Run",
    "complete_runs",
    "invalid_steps",
    "positions",
    "traces",
]
