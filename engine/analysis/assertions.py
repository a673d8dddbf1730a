"""Sequence assertions (`expect:`): proved over every run of the machine, or refuted by the
shortest run that breaks them.

Each assertion becomes one small monitor per subject tool: an automaton over the tool calls
of a run with an integer state (a flag or a capped counter). The monitor runs in lockstep
with the explored graph (a breadth-first search over position x monitor state), so the first
violation found is a shortest counterexample. A run *ends* when it stops for a terminal tool
or a reply without a tool call; dead ends are findings of their own (C101).

Codes (errors):

    A100 the assertion names a tool the agent does not have
    A101 never          A102 never_after     A103 only_after     A104 always_before
    A105 at_most        A106 eventually      A107 ends_with
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.analysis.explore import DEAD, END, Graph
from engine.analysis.findings import Finding, Locator
from engine.errors import Diagnostic, Severity
from engine.language import spec
from engine.language.yamltree import SourceMap

CODES = {
    "never": "A101",
    "never_after": "A102",
    "only_after": "A103",
    "always_before": "A104",
    "at_most": "A105",
    "eventually": "A106",
    "ends_with": "A107",
}

Call = Callable[[int, int], int]  # (state, tool index) -> next state, or -1: violated
End = Callable[[int, int | None, int | None], bool]  # (state before the final step,
# terminal tool index or None for a reply, last tool called or None) -> holds


@dataclass(frozen=True)
class Monitor:
    subject: str
    call: Call
    end: End | None = None


@dataclass(frozen=True)
class Violation:
    """Where a monitor failed: the steps, how the run stopped (if it did) and the position.

    A long run that repeats a loop is kept as its parts: `step_ids` is the run without the
    repeats, and `loop` (when set) is (index into step_ids, the loop's step ids, repeats):
    the loop runs `repeats` more times at that index. Nothing is materialised call by call.
    """

    step_ids: list[int]
    position_id: int  # the position the last step left from (or the text reply was at)
    failing_step: int | None  # the step id that broke the assertion, None for a reply end
    final: str | None  # "call", "terminal" or "reply"
    loop: tuple[int, list[int], int] | None = None

    @property
    def length(self) -> int:
        extra = 0 if self.loop is None else len(self.loop[1]) * self.loop[2]
        return len(self.step_ids) + extra

    def labels(self, graph: Graph) -> tuple[str, ...]:
        """The run as `toolfsm trace` steps; a step or loop repeated SQUEEZE_FROM times or more
        in a row is one `N*STEP` or `N*(STEPS)`."""
        runs: list[tuple[str, int]] = [(label, 1) for label in graph.labels(self.step_ids)]
        if self.loop is not None:
            at, loop, repeats = self.loop
            inner = graph.labels(loop)
            block = inner[0] if len(inner) == 1 else "(" + " ".join(inner) + ")"
            runs.insert(at, (block, repeats))
        return _squeeze(runs)


SQUEEZE_FROM = 100  # a step repeated this often in a row is written once, with its count


def _squeeze(runs: list[tuple[str, int]]) -> tuple[str, ...]:
    merged: list[tuple[str, int]] = []
    for label, count in runs:
        if merged and merged[-1][0] == label:
            merged[-1] = (label, merged[-1][1] + count)
        elif count:
            merged.append((label, count))
    out: list[str] = []
    for label, count in merged:
        if count >= SQUEEZE_FROM or label.startswith("("):
            out.append(f"{count}*{label}")
        else:
            out += [label] * count
    return tuple(out)


def _never(x: int) -> Call:
    return lambda s, t: -1 if t == x else 0


def _never_after(x: int, y: int) -> Call:
    return lambda s, t: -1 if t == x and s else (1 if s or t == y else 0)


def _only_after(x: int, y: int) -> Call:
    return lambda s, t: -1 if t == x and not s else (1 if s or t == y else 0)


def _flag(x: int) -> Call:
    return lambda s, t: 1 if s or t == x else 0


def _called_or_final(x: int) -> End:
    return lambda s, final, last: bool(s) or final == x


def _at_most(x: int, n: int) -> Call:
    return lambda s, t: (-1 if s + 1 > n else s + 1) if t == x else s


def monitors(expect: Any, tool_index: dict[str, int]) -> list[Monitor]:
    """One monitor per subject tool of an assertion (an assertion holds when all of them do)."""
    build = _MONITORS.get(type(expect))
    if build is None:  # pragma: no cover - closed union
        raise AssertionError(f"unknown assertion {expect!r}")
    return build(expect, tool_index)


def _never_monitors(expect: Any, tool_index: dict[str, int]) -> list[Monitor]:
    return [Monitor(t, _never(tool_index[t])) for t in spec.as_tuple(expect.never)]


def _never_after_monitors(expect: Any, tool_index: dict[str, int]) -> list[Monitor]:
    y = tool_index[expect.never_after]
    return [Monitor(t, _never_after(tool_index[t], y)) for t in spec.as_tuple(expect.tools)]


def _only_after_monitors(expect: Any, tool_index: dict[str, int]) -> list[Monitor]:
    y = tool_index[expect.only_after]
    return [Monitor(t, _only_after(tool_index[t], y)) for t in spec.as_tuple(expect.tools)]


def _always_before_monitors(expect: Any, tool_index: dict[str, int]) -> list[Monitor]:
    return [
        Monitor(t, _flag(tool_index[t]), lambda s, final, last: bool(s))
        for t in spec.as_tuple(expect.always_before)
    ]


def _eventually_monitors(expect: Any, tool_index: dict[str, int]) -> list[Monitor]:
    out = []
    for t in spec.as_tuple(expect.eventually):
        x = tool_index[t]
        out.append(Monitor(t, _flag(x), _called_or_final(x)))
    return out


def _at_most_monitors(expect: Any, tool_index: dict[str, int]) -> list[Monitor]:
    n = expect.at_most
    return [Monitor(t, _at_most(tool_index[t], n)) for t in spec.as_tuple(expect.tools)]


def _ends_with_monitors(expect: Any, tool_index: dict[str, int]) -> list[Monitor]:
    names = spec.as_tuple(expect.ends_with)
    allowed = {tool_index[t] for t in names}
    return [Monitor(", ".join(names), lambda s, t: 0, lambda s, final, last: last in allowed)]


# The monitors of each kind of assertion.
_MONITORS: dict[type, Callable[[Any, dict[str, int]], list[Monitor]]] = {
    spec.NeverExpect: _never_monitors,
    spec.NeverAfterExpect: _never_after_monitors,
    spec.OnlyAfterExpect: _only_after_monitors,
    spec.AlwaysBeforeExpect: _always_before_monitors,
    spec.EventuallyExpect: _eventually_monitors,
    spec.AtMostExpect: _at_most_monitors,
    spec.EndsWithExpect: _ends_with_monitors,
}


class _TooLarge(Exception):
    """The product of positions and monitor states outgrew its bound."""


PRODUCT_LIMIT = 1_000_000  # (position, monitor state) pairs one search may visit


def search(graph: Graph, monitor: Monitor, *, limit: int | None = None) -> Violation | None:
    """The shortest run that breaks the monitor, or None when every explored run keeps it;
    `_TooLarge` past `limit` visited (position, state) pairs."""
    steps = graph.steps
    nodes = graph.machine.nodes
    tool_index = graph.machine.tool_index
    call, end = monitor.call, monitor.end
    parent: dict[tuple[int, int], tuple[tuple[int, int], int] | None] = {(0, 0): None}
    queue = [(0, 0)]

    def path(key: tuple[int, int]) -> list[int]:
        ids = []
        link = parent[key]
        while link is not None:
            key, step = link
            ids.append(step)
            link = parent[key]
        ids.reverse()
        return ids

    def ends_badly(key: tuple[int, int]) -> bool:
        pid, state = key
        if end is None or not graph.text_end[pid]:
            return False
        last = nodes[graph.node(pid)].last_tool
        return not end(state, None, None if last is None else tool_index[last])

    # A reply is judged when its position is discovered, a call when its source is expanded:
    # both then come out in order of length, so the first violation is a shortest one.
    if ends_badly((0, 0)):
        return Violation([], 0, None, "reply")
    for key in queue:
        pid, state = key
        lo, hi = graph.edge_start[pid], graph.edge_start[pid + 1]
        for j in range(lo, hi):
            step_id, target = graph.edge_step[j], graph.edge_target[j]
            tool = steps[step_id].tool_index
            new_state = call(state, tool)
            if new_state < 0:
                return Violation([*path(key), step_id], pid, step_id, "call")
            if target == END:
                if end is not None and not end(state, tool, tool):
                    return Violation([*path(key), step_id], pid, step_id, "terminal")
                continue
            if target == DEAD:
                continue
            new_key = (target, new_state)
            if new_key not in parent:
                if limit is not None and len(parent) >= limit:
                    raise _TooLarge
                parent[new_key] = (key, step_id)
                if ends_badly(new_key):
                    return Violation(path(new_key), target, None, "reply")
                queue.append(new_key)
    return None


def _sccs(graph: Graph) -> list[int]:
    """Strongly connected component of every position, over edges between live positions
    (iterative Tarjan: linear in positions and edges)."""
    n = len(graph)
    index = [-1] * n
    low = [0] * n
    component = [-1] * n
    on_stack = [False] * n
    stack: list[int] = []
    counter = components = 0
    starts, targets = graph.edge_start, graph.edge_target
    for root in range(n):
        if index[root] >= 0:
            continue
        work = [(root, starts[root])]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = True
        while work:
            node, j = work[-1]
            if j < starts[node + 1]:
                work[-1] = (node, j + 1)
                target = targets[j]
                if target < 0:
                    continue
                if index[target] < 0:
                    index[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack[target] = True
                    work.append((target, starts[target]))
                elif on_stack[target]:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                parent_node = work[-1][0]
                low[parent_node] = min(low[parent_node], low[node])
            if low[node] == index[node]:
                while True:
                    member = stack.pop()
                    on_stack[member] = False
                    component[member] = components
                    if member == node:
                        break
                components += 1
    return component


def _path_within(graph: Graph, source: int, target: int, component: list[int]) -> list[int]:
    """Step ids of a shortest path from `source` to `target` inside their component."""
    if source == target:
        return []
    came: dict[int, tuple[int, int]] = {source: (-1, -1)}
    queue = [source]
    for node in queue:
        for step_id, next_node in graph.out(node):
            if next_node < 0 or next_node in came or component[next_node] != component[source]:
                continue
            came[next_node] = (node, step_id)
            if next_node == target:
                ids = []
                while next_node != source:
                    next_node, step_id = came[next_node]
                    ids.append(step_id)
                return ids[::-1]
            queue.append(next_node)
    raise AssertionError("target not in the component")  # pragma: no cover


def _at_most_by_loop(graph: Graph, tool: int, bound: int) -> Violation | None:
    """A run calling `tool` more than `bound` times, built from a loop that calls it, without
    walking the calls one by one; None when no reachable loop calls it (undecided here)."""
    component = _sccs(graph)
    steps = graph.steps
    for source in range(len(graph)):
        for step_id, target in graph.out(source):
            if target < 0 or steps[step_id].tool_index != tool:
                continue
            if component[target] != component[source]:
                continue
            prefix = graph.path(source)
            loop = [step_id, *_path_within(graph, target, source, component)]
            calls_before = sum(1 for s in prefix if steps[s].tool_index == tool)
            per_loop = sum(1 for s in loop if steps[s].tool_index == tool)
            needed = bound + 1 - calls_before
            if needed <= 0:  # pragma: no cover - the product search finds these first
                continue
            repeats, rest = divmod(needed - 1, per_loop)
            # Then one more pass through the loop, up to and including the (rest+1)-th call.
            tail = _up_to_call(graph, loop, tool, rest + 1)
            position = _replay(graph, source, tail[:-1])
            return Violation(
                [*prefix, *tail], position, tail[-1], "call", loop=(len(prefix), loop, repeats)
            )
    return None


def _up_to_call(graph: Graph, loop: list[int], tool: int, nth: int) -> list[int]:
    """The steps of `loop` up to and including its `nth` call of `tool`."""
    tail: list[int] = []
    seen = 0
    for s in loop:
        tail.append(s)
        if graph.steps[s].tool_index == tool:
            seen += 1
            if seen == nth:
                break
    return tail


def _replay(graph: Graph, position: int, step_ids: list[int]) -> int:
    """The position reached from `position` by taking `step_ids` in turn."""
    for s in step_ids:
        position = next(t for sid, t in graph.out(position) if sid == s and t >= 0)
    return position


def _describe(kind: str, expect: Any, subject: str, graph: Graph, v: Violation) -> str:
    labels = v.labels(graph)
    run = f"the run {' -> '.join(labels)}" if labels else "a run with no tool call"
    if v.final == "reply":
        how = "ends with a reply (no tool call)"
    elif v.final == "terminal":
        how = f"ends with the terminal tool {graph.steps[v.step_ids[-1]].tool!r}"
    else:
        how = ""
    match kind:
        case "never":
            return f"expected {subject!r} never to be called, but {run} calls it"
        case "never_after":
            return (
                f"expected {subject!r} never to be called after {expect.never_after!r}, "
                f"but {run} does"
            )
        case "only_after":
            return (
                f"expected {subject!r} to be called only after {expect.only_after!r}, but "
                f"{run} calls it before {expect.only_after!r} was called"
            )
        case "always_before":
            return (
                f"expected every run to call {subject!r} before it ends, but {run} {how} "
                "without having called it"
            )
        case "eventually":
            return f"expected every run to call {subject!r}, but {run} {how} without calling it"
        case "at_most":
            return (
                f"expected {subject!r} to be called at most {expect.at_most} time(s), but "
                f"{run} calls it {expect.at_most + 1} times"
            )
        case "ends_with":
            return f"expected every run to end with one of {subject}, but {run} {how}"
    raise AssertionError(kind)  # pragma: no cover


def _unknown_tools(expect: Any, index: int, known: set[str]) -> list[tuple[str, tuple[Any, ...]]]:
    out = []
    for field, value in expect.model_dump(by_alias=True, exclude={"note"}).items():
        if field == "at_most":
            continue
        names = [value] if isinstance(value, str) else list(value)
        for position, name in enumerate(names):
            if name not in known:
                path: tuple[Any, ...] = ("expect", index, field)
                if not isinstance(value, str):
                    path = (*path, position)
                out.append((name, path))
    return out


_UNDECIDED = Violation([], -1, None, None)  # the search outgrew its bound; no answer


def _search_bounded(graph: Graph, monitor: Monitor, expect: Any) -> Violation | None:
    """`search` within PRODUCT_LIMIT; past it, an `at_most` monitor is decided by a loop that
    calls its tool (a run repeating it breaks any bound), anything else is `_UNDECIDED`."""
    at_most = isinstance(expect, spec.AtMostExpect)
    # An at_most search visits up to (bound + 2) counter values per position: past the limit,
    # go straight to the loop (a bound of 10 million would visit tens of millions of pairs).
    if not at_most or (expect.at_most + 2) * len(graph) <= PRODUCT_LIMIT:
        try:
            return search(graph, monitor, limit=PRODUCT_LIMIT)
        except _TooLarge:
            pass
    if at_most:
        found = _at_most_by_loop(graph, graph.machine.tool_index[monitor.subject], expect.at_most)
        if found is not None:
            return found
    return _UNDECIDED


def _undecided(locator: Locator, index: int, subjects: list[str]) -> Finding:
    return Finding(
        Diagnostic(
            Severity.ERROR,
            "C190",
            f"this assertion could not be decided for {', '.join(map(repr, subjects))}: the "
            f"search outgrew its bound of {PRODUCT_LIMIT} (position, count) pairs",
            locator.at(("expect", index)),
        ),
        expect=index,
    )


def check_assertions(graph: Graph, source: SourceMap | None = None) -> list[Finding]:
    """One finding per assertion that fails (or names an unknown tool); none when all hold."""
    machine = graph.machine
    locator = Locator(machine, source)
    known = set(machine.tools)
    findings: list[Finding] = []
    for index, expect in enumerate(machine.spec.expect):
        kind = spec.expect_kind(expect) or ""
        unknown = _unknown_tools(expect, index, known)
        if unknown:
            for name, path in unknown:
                findings.append(
                    Finding(
                        Diagnostic(
                            Severity.ERROR,
                            "A100",
                            f"assertion names tool {name!r}, which the agent does not have",
                            locator.at(path),
                        ),
                        expect=index,
                    )
                )
            continue
        best: tuple[Violation, str] | None = None
        undecided: list[str] = []
        for monitor in monitors(expect, dict(machine.tool_index)):
            violation = _search_bounded(graph, monitor, expect)
            if violation is _UNDECIDED:
                undecided.append(monitor.subject)
            elif violation and (best is None or violation.length < best[0].length):
                best = (violation, monitor.subject)
        if best is None:
            if undecided:
                findings.append(_undecided(locator, index, undecided))
            continue
        violation, subject = best
        message = _describe(kind, expect, subject, graph, violation)
        if expect.note:
            message += f" ({expect.note})"
        position = graph.position(violation.position_id)
        if violation.failing_step is not None:
            step = graph.steps[violation.failing_step]
            position = machine.advance(position, step.tool, step.output)
        findings.append(
            Finding(
                Diagnostic(
                    Severity.ERROR,
                    CODES[kind],
                    message,
                    locator.at(("expect", index)),
                    trace=violation.labels(graph),
                ),
                position,
                expect=index,
            )
        )
    return findings
