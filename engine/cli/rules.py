"""`toolfsm validate | graph | trace | explain`: the rule-file commands (no LLM, no store)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from engine.cli import app
from engine.cli.common import (
    EXIT_ERRORS,
    DiagnosticFormat,
    FormatOption,
    PathsArgument,
    collect_rule_files,
    fail,
    file_done,
    json_document,
    load_machine,
    parse_steps,
    read_rule_source,
    report,
    require_tool,
    rule_files_from_args,
)
from engine.errors import Diagnostic

if TYPE_CHECKING:
    from engine.machine import Machine
    from engine.machine.trace import TraceRow

# Kept importable from here (benchmarks use them).
__all__ = ["DiagnosticFormat", "collect_rule_files", "explain", "graph", "trace", "validate"]


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"


@app.command()
def validate(
    paths: Annotated[list[Path], PathsArgument],
    fmt: Annotated[DiagnosticFormat, FormatOption] = DiagnosticFormat.text,
    only_rule_files: Annotated[
        bool,
        typer.Option(
            "--only-rule-files",
            help="Skip named files without a top-level version/agent/tools/rules key "
            "(for hooks that pass every changed YAML file).",
        ),
    ] = False,
) -> None:
    """Validate rule files: every error with FILE:LINE:COL, in one pass."""
    from engine.machine.compiler import compile_rules

    with json_document(fmt):
        files = rule_files_from_args(paths, only_rule_files=only_rule_files)
        diagnostics: list[Diagnostic] = []
        for path in files:
            rule_file = read_rule_source(path)
            diagnostics.extend(rule_file.diagnostics)
            if rule_file.ok:
                compile_rules(rule_file)  # compiling is part of validity (and cheap)
            file_done(rule_file.path, rule_file.diagnostics)
    report(diagnostics, fmt, f"{len(files)} file(s) checked")


@app.command()
def graph(
    file: Annotated[Path, typer.Argument(help="A rule file.")],
    fmt: Annotated[
        GraphFormat,
        typer.Option("--format", "-f", help="mermaid (stateDiagram-v2) or dot (Graphviz)."),
    ] = GraphFormat.mermaid,
    all_nodes: Annotated[
        bool, typer.Option("--all", help="Include nodes that cannot be reached from the start.")
    ] = False,
    max_transitions: Annotated[
        int,
        typer.Option(
            "--max-transitions",
            min=1,
            help="Bound on drawn transitions; a larger diagram is not drawn (exit 1).",
        ),
    ] = 10_000,
) -> None:
    """Draw the compiled machine as a Mermaid or Graphviz DOT state diagram."""
    from engine.analysis.explore import taken_transitions
    from engine.machine.fsm import DiagramTooLarge, markup
    from engine.machine.render import RENDERERS

    machine = load_machine(file)
    try:
        # The bound first, on the static edges (cheap); then only the transitions a run can
        # take (max_calls counters and terminal stops counted), when exploring finds them.
        drawn = markup(machine, only_reachable=not all_nodes, limit=max_transitions)
        taken = taken_transitions(machine)
        if taken is not None:
            drawn = markup(machine, only_reachable=not all_nodes, limit=None, taken=taken)
    except DiagramTooLarge as exc:
        fail(f"{file}: {exc}; raise the bound with --max-transitions", EXIT_ERRORS)
    typer.echo(RENDERERS[fmt.value](drawn), nl=False)


StepsArgument = typer.Argument(
    help="Tool calls in order: `tool`, or `tool=OUTPUT` for the output a conditional rule reads."
)


@app.command()
def trace(
    file: Annotated[Path, typer.Argument(help="A rule file.")],
    steps: Annotated[list[str] | None, StepsArgument] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of rows.")] = False,
    heartbeat: Annotated[
        bool, typer.Option("--heartbeat", help="Heartbeat mode: calls do not continue by default.")
    ] = False,
) -> None:
    """Replay tool calls through the machine, without an LLM.

    After each call: the decision (continue or stop, and why), the allowed tools and the
    forcing. A forbidden call is reported as a VIOLATION naming the rule, and the trace goes on
    from where it was (exit 0: the trace is the output).
    """
    from engine.machine.trace import trace as run_trace

    machine = load_machine(file)
    rows = run_trace(
        machine, parse_steps(machine, steps or []), heartbeat=False if heartbeat else None
    )
    if as_json:
        typer.echo(json.dumps([row.as_json() for row in rows], indent=2))
        return
    for row in rows:
        _print_trace_row(machine, row)


def _print_trace_row(machine: Machine, row: TraceRow) -> None:
    """One replayed call as `trace` prints it: where it led, a violation, the decision, then
    what the next call may be."""
    head = "start" if row.after is None else f"after {row.after}"
    if row.output is not None and row.after is not None:
        head += f" = {row.output!r}"
    typer.echo(f"{head}  [{row.node}]")
    if row.violation:
        typer.echo(f"  VIOLATION: {row.violation}")
    if row.decision:
        detail = f" ({row.message})" if row.message else ""
        typer.echo(f"  decision: {row.decision} ({row.reason}){detail}")
    allowed = ", ".join(row.allowed) or (
        "none: dead end"
        if machine.dead_end(row.position)
        else "none: answer only (a reply without a tool call ends the run)"
    )
    typer.echo(f"  allowed:  {allowed}")
    if row.force:
        typer.echo(f"  forced:   {row.forced_tool or 'yes (any allowed tool)'}")


@app.command()
def explain(
    file: Annotated[Path, typer.Argument(help="A rule file.")],
    tool: Annotated[str, typer.Argument(help="The tool to explain.")],
    steps: Annotated[list[str] | None, StepsArgument] = None,
) -> None:
    """Why TOOL is or is not allowed after the given calls, with the rules responsible."""
    from engine.machine.explain import explain as run_explain
    from engine.machine.trace import trace as run_trace

    machine = load_machine(file)
    require_tool(machine, tool, "TOOL")
    rows = run_trace(machine, parse_steps(machine, steps or []))
    for row in rows[1:]:
        if row.violation:
            typer.echo(f"note: step {row.after!r} was not allowed and is ignored: {row.violation}")
    typer.echo(str(run_explain(machine, rows[-1].position, tool)))
