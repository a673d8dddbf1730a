"""Random-policy runs through a machine, without an LLM or tools, and what they covered.

The policy at each position: uniform over the allowed tools, plus "reply without a tool call"
as one more choice when the gate does not force a call; a conditional tool's output is drawn
uniformly from one text per case key plus one that matches no key (see `case_outputs`).
Calls that need approval count as approved. A run stops as the runtime would stop it
(terminal tool, reply, dead end) or at the step limit. Seeded: the same seed gives the same runs.

With a tool registry (`toolfsm simulate --tools MODULE`), allowed calls really run: arguments
are sampled from each tool's JSON Schema (prefilled values win, as in the runtime), the tool's
own output picks the conditional case, and a call whose arguments do not validate is refused
without running, as the runtime refuses it. Tool errors and refused calls are counted.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.analysis.explore import case_outputs, taken_transitions
from engine.language import spec
from engine.machine import Machine, Position, StopReason
from engine.machine.fsm import MAX_TRANSITIONS, DiagramTooLarge, edges, reachable_nodes

REPLY = "<reply>"


@dataclass
class SimulationReport:
    """Coverage of a batch of simulated runs."""

    agent: str
    runs: int
    seed: int
    max_steps: int
    tools_called: Counter[str] = field(default_factory=Counter)
    tools_never: list[str] = field(default_factory=list)
    transitions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    transitions_never: list[tuple[str, str, str]] = field(default_factory=list)
    transitions_listed: bool = True  # False: more than MAX_TRANSITIONS, never ones not listed
    rules_fired: Counter[int] = field(default_factory=Counter)
    rules_never: list[tuple[int, str]] = field(default_factory=list)  # (index, prompt line)
    stop_reasons: Counter[str] = field(default_factory=Counter)
    lengths: list[int] = field(default_factory=list)
    approvals: int = 0
    tool_errors: Counter[str] = field(default_factory=Counter)  # with --tools: tool raised
    argument_errors: Counter[str] = field(default_factory=Counter)  # with --tools: refused

    def length_summary(self) -> dict[str, float]:
        if not self.lengths:
            return {}
        return {
            "min": min(self.lengths),
            "median": statistics.median(self.lengths),
            "mean": round(statistics.fmean(self.lengths), 2),
            "max": max(self.lengths),
        }

    def histogram(self, buckets: int = 10) -> list[tuple[int, int, int]]:
        """(low, high, runs) buckets of run lengths, in steps."""
        if not self.lengths:
            return []
        low, high = min(self.lengths), max(self.lengths)
        width = max(1, -(-(high - low + 1) // buckets))
        counts = Counter((n - low) // width for n in self.lengths)
        return [
            (low + b * width, low + (b + 1) * width - 1, counts.get(b, 0))
            for b in range((high - low) // width + 1)
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "runs": self.runs,
            "seed": self.seed,
            "max_steps": self.max_steps,
            "tools": {"called": dict(self.tools_called), "never": self.tools_never},
            "transitions": {
                "reached": len(self.transitions),
                "total": (
                    len(self.transitions) + len(self.transitions_never)
                    if self.transitions_listed
                    else None  # more than MAX_TRANSITIONS: not counted
                ),
                "never": [f"{a} --{t}--> {b}" for a, t, b in self.transitions_never],
            },
            "rules_never_fired": [{"rule": i, "text": text} for i, text in self.rules_never],
            "stop_reasons": dict(self.stop_reasons),
            "run_length": self.length_summary(),
            "run_length_histogram": [
                {"from": a, "to": b, "runs": n} for a, b, n in self.histogram()
            ],
            "approvals": self.approvals,
            "tool_errors": dict(self.tool_errors),
            "argument_errors": dict(self.argument_errors),
        }


def _rule_fires(machine: Machine) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """tool -> rules that fire when it is called; tool -> max_calls rules (fire at the limit)."""
    on_call: dict[str, list[int]] = {}
    on_limit: dict[str, list[int]] = {}
    for index, rule in enumerate(machine.spec.rules):
        names: tuple[str, ...]
        match rule:
            case spec.ChildRule() | spec.ConditionalRule():
                names = (rule.after,)
            case spec.ParentRule():
                names = spec.as_tuple(rule.tools)
            case spec.TerminalRule() | spec.ContinueRule() | spec.RequiresApprovalRule():
                names = spec.flag_tools(rule)
            case spec.MaxCallsRule():
                for name in spec.as_tuple(rule.tools):
                    on_limit.setdefault(name, []).append(index)
                continue
            case _:
                continue
        for name in names:
            on_call.setdefault(name, []).append(index)
    return on_call, on_limit


def sample_arguments(schema: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Plausible arguments for a JSON Schema object: a value per property, by its type."""
    out: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        out[name] = _sample_value(prop if isinstance(prop, dict) else {}, rng)
    return out


def _sample_value(schema: dict[str, Any], rng: random.Random) -> Any:
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _sample_value(rng.choice(schema[key]), rng)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = rng.choice(kind)
    sample = _SAMPLERS.get(kind) if isinstance(kind, str) else None
    return sample(schema, rng) if sample else rng.choice(["a", "b", "example"])


# A sampled value per JSON Schema type (any other type: a short string).
_SAMPLERS: dict[str, Callable[[dict[str, Any], random.Random], Any]] = {
    "boolean": lambda schema, rng: rng.random() < 0.5,
    "integer": lambda schema, rng: rng.randint(
        int(schema.get("minimum", 0)), int(schema.get("maximum", 10))
    ),
    "number": lambda schema, rng: round(
        rng.uniform(schema.get("minimum", 0), schema.get("maximum", 10)), 2
    ),
    "array": lambda schema, rng: [
        _sample_value(schema.get("items") or {}, rng) for _ in range(rng.randint(0, 2))
    ],
    "object": lambda schema, rng: sample_arguments(schema, rng),
    "null": lambda schema, rng: None,
}


def simulate_runs(
    machine: Machine,
    *,
    runs: int = 1000,
    seed: int = 0,
    max_steps: int = 50,
    progress: bool = False,
    tools: Any = None,
) -> SimulationReport:
    """Run the random policy `runs` times and collect coverage.

    `tools` is an `engine.tools.ToolRegistry`: when given, calls execute the real tools.
    """
    loop = asyncio.new_event_loop() if tools is not None else None
    report = SimulationReport(machine.agent, runs, seed, max_steps)
    simulation = _Simulation(machine, report, random.Random(seed), tools, loop)
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task(f"simulating {machine.agent}", total=runs)
    try:
        for run in range(runs):
            simulation.run_once()
            if bar is not None and (run % 64 == 63 or run == runs - 1):
                bar.update(task, completed=run + 1)
    finally:
        if bar is not None:
            bar.stop()
        if loop is not None:
            loop.close()
    _add_coverage(machine, report)
    return report


class _Simulation:
    """One machine's random-policy runs, counted into one report."""

    def __init__(
        self,
        machine: Machine,
        report: SimulationReport,
        rng: random.Random,
        tools: Any,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.machine = machine
        self.report = report
        self.rng = rng
        self.tools = tools
        self.loop = loop
        self.outputs = {t: [text for text, _ in case_outputs(machine, t)] for t in machine.tools}
        self.on_call, self.on_limit = _rule_fires(machine)
        self.required_rules = [
            (i, set(spec.as_tuple(r.required_before_exit)))
            for i, r in enumerate(machine.spec.rules)
            if isinstance(r, spec.RequiredBeforeExitRule)
        ]
        self.init_rules = [
            i for i, r in enumerate(machine.spec.rules) if isinstance(r, spec.InitRule)
        ]
        self.names = [n.name for n in machine.nodes]

    def run_once(self) -> None:
        """One run from the start until it stops or reaches the step limit."""
        report = self.report
        position = self.machine.start()
        for i in self.init_rules:
            report.rules_fired[i] += 1
        steps = 0
        stop: StopReason | None = None
        while stop is None:
            if steps >= report.max_steps:
                stop = StopReason.STEP_LIMIT
                break
            gate = self.machine.gate(position)
            choices: list[str] = list(gate.allowed)
            if not gate.force:
                choices.append(REPLY)
            choice = self.rng.choice(choices)
            steps += 1
            if choice == REPLY:
                stop = self._reply(position)
            else:
                position, stop = self._call(position, choice)
        report.stop_reasons[str(stop)] += 1
        report.lengths.append(steps)

    def _reply(self, position: Position) -> StopReason | None:
        verdict = self.machine.after_text(position)
        if verdict.continues or verdict.stop_reason is StopReason.DEAD_END:
            self._fire_required(position)
        return verdict.stop_reason

    def _call(self, position: Position, choice: str) -> tuple[Position, StopReason | None]:
        """Call `choice`: the position after it and why the run stops (None: it goes on)."""
        machine, report = self.machine, self.report
        if self.tools is None:
            output = self.rng.choice(self.outputs[choice])
        else:
            tool = self.tools[choice]
            output = _run_tool(tool, machine, position, choice, self.rng, self.loop, report)
            if output is _REFUSED:
                return position, None  # refused like the runtime refuses it: no advance
        before = position
        position = machine.advance(position, choice, output)
        report.tools_called[choice] += 1
        report.transitions[(self.names[before.node], choice, self.names[position.node])] += 1
        if choice in machine.approval:
            report.approvals += 1
        for i in self.on_call.get(choice, ()):
            report.rules_fired[i] += 1
        if choice in self.on_limit and position.exhausted != before.exhausted:
            for i in self.on_limit[choice]:
                report.rules_fired[i] += 1
        verdict = machine.after_call(position, choice)
        if choice in machine.terminal and verdict.continues:
            self._fire_required(position)
        return position, verdict.stop_reason

    def _fire_required(self, position: Position) -> None:
        """Count the required_before_exit rules that hold the run back at `position`."""
        pending = set(self.machine.pending_required(position))
        for i, required in self.required_rules:
            if required & pending:
                self.report.rules_fired[i] += 1


def _add_coverage(machine: Machine, report: SimulationReport) -> None:
    """What the runs never reached: tools, transitions some run can take, rules."""
    report.tools_never = [t for t in machine.tools if t not in report.tools_called]
    # Only transitions some run can take count (none out of a terminal tool's node, none a
    # used-up max_calls limit forbids).
    taken = taken_transitions(machine)
    reachable = set(reachable_nodes(machine, taken))
    try:  # 10,000 tools after one child rule: 100 million transitions, counted, not listed
        possible = edges(machine, taken=taken, limit=MAX_TRANSITIONS)
    except DiagramTooLarge:
        report.transitions_listed = False
        possible = []
    report.transitions_never = list(
        dict.fromkeys(
            key
            for e in possible
            if e.source in reachable
            and (key := (e.source, e.tool, e.dest)) not in report.transitions
        )
    )
    report.rules_never = [
        (ref.index, ref.text) for ref in machine.rules if ref.index not in report.rules_fired
    ]


_REFUSED = object()


def _run_tool(
    tool: Any,
    machine: Machine,
    position: Any,
    name: str,
    rng: random.Random,
    loop: asyncio.AbstractEventLoop | None,
    report: SimulationReport,
) -> Any:
    """Execute one real tool call with sampled arguments; `_REFUSED` when they do not validate."""
    from engine.tools import ArgumentError

    assert loop is not None
    prefill = machine.gate(position).prefill.get(name)
    raw = json.dumps(sample_arguments(tool.spec().parameters, rng), default=str)
    try:
        arguments, _ = tool.parse(raw, prefill=prefill)
    except ArgumentError:
        report.argument_errors[name] += 1
        return _REFUSED
    result = loop.run_until_complete(tool.execute(arguments))
    if result.is_error:
        report.tool_errors[name] += 1
    return result.output


def render_report(report: SimulationReport) -> None:
    """Print the coverage report with rich tables."""
    from rich.console import Console

    console = Console()
    console.print(
        f"[bold]{report.agent}[/]: {report.runs} run(s), seed {report.seed}, "
        f"step limit {report.max_steps}"
    )
    _print_coverage(console, report)
    _print_stops(console, report)


def _print_coverage(console: Any, report: SimulationReport) -> None:
    """Tools called and never called, transitions never reached, rules that never fired."""
    from rich.table import Table

    tools = Table("tool", "calls", title="Tools")
    for tool, count in report.tools_called.most_common():
        tools.add_row(tool, str(count))
    for tool in report.tools_never:
        tools.add_row(f"[red]{tool}[/]", "never")
    console.print(tools)
    total = (
        str(len(report.transitions) + len(report.transitions_never))
        if report.transitions_listed
        else f"more than {MAX_TRANSITIONS} (not listed)"
    )
    console.print(f"Transitions reached: {len(report.transitions)} of {total}")
    for source, tool, dest in report.transitions_never:
        console.print(f"  [yellow]never[/] {source} --{tool}--> {dest}")
    if report.rules_never:
        console.print("Rules that never fired:")
        for index, text in report.rules_never:
            console.print(f"  [yellow]rule {index}[/]: {text}")
    else:
        console.print("Every rule fired at least once.")


def _print_stops(console: Any, report: SimulationReport) -> None:
    """How the runs stopped, how long they were, and the errors the real tools gave."""
    from rich.table import Table

    stops = Table("stop reason", "runs", title="Stop reasons")
    for reason, count in report.stop_reasons.most_common():
        stops.add_row(reason, str(count))
    console.print(stops)
    summary = report.length_summary()
    console.print(
        "Run length (steps): "
        + ", ".join(f"{k} {v}" for k, v in summary.items())
        + (f"; approvals granted: {report.approvals}" if report.approvals else "")
    )
    for label, counter in (
        ("tool errors", report.tool_errors),
        ("refused calls (invalid arguments)", report.argument_errors),
    ):
        if counter:
            console.print(f"{label}: " + ", ".join(f"{t} {n}" for t, n in counter.items()))
    peak = max((n for _, _, n in report.histogram()), default=0) or 1
    for low, high, count in report.histogram():
        bar = "#" * max(1 if count else 0, round(30 * count / peak))
        label = f"{low}" if low == high else f"{low}-{high}"
        console.print(f"  {label:>7} {count:>6} {bar}")
