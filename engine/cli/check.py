"""`toolfsm check | simulate`: prove a rule file cannot trap an agent, and sample its runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from engine.cli import app
from engine.cli.common import (
    DiagnosticFormat,
    FormatOption,
    PathsArgument,
    fail,
    file_done,
    json_document,
    load_machine,
    read_rule_source,
    report,
    rule_files_from_args,
)


@app.command()
def check(
    paths: Annotated[list[Path], PathsArgument],
    fmt: Annotated[DiagnosticFormat, FormatOption] = DiagnosticFormat.text,
    max_states: Annotated[
        int,
        typer.Option(
            "--max-states",
            min=1,
            help="Bound on explored positions per file; hitting it is error C190 (incomplete).",
        ),
    ] = 200_000,
    show_silenced: Annotated[
        bool, typer.Option("--show-silenced", help="Also list silenced warnings (text format).")
    ] = False,
) -> None:
    """Prove rule files cannot trap an agent: dead ends, traps, `expect:` assertions.

    Validates each file, then explores every reachable position of its machine; each finding
    (also unreachable tools and rules that never fire) comes with its shortest trace.
    """
    from engine.analysis.check import check_rule_file

    with json_document(fmt):
        files = rule_files_from_args(paths)
        diagnostics = []
        silenced = []
        states = 0
        sources = []
        for path in files:
            source = read_rule_source(path)
            sources.append(source)
            result = check_rule_file(source, max_states=max_states)
            file_done(result.path, result.diagnostics)
            diagnostics.extend(result.diagnostics)
            silenced.extend(result.silenced)
            states += result.states
        agent_notes: list[str] = []
        if len(files) > 1 or any(p.is_dir() for p in paths):
            # Several agents: the calls between them too.
            from engine.analysis.agents import check_agents

            across, agent_notes = check_agents(sources)
            diagnostics.extend(across)
    notes = (
        [f"{d.span}: silenced[{d.code}]: {reason}" for d, reason in silenced]
        if show_silenced
        else []
    ) + agent_notes
    summary = f"{len(files)} file(s) checked, {states} position(s) explored"
    report(diagnostics, fmt, summary, notes=notes, tail=f", {len(silenced)} silenced")


@app.command()
def simulate(
    file: Annotated[Path, typer.Argument(help="A rule file.")],
    runs: Annotated[int, typer.Option("--runs", "-n", min=1, help="Number of runs.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same runs).")] = 0,
    max_steps: Annotated[
        int, typer.Option("--max-steps", min=1, help="Step limit of each run.")
    ] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    progress: Annotated[
        bool,
        typer.Option("--progress/--no-progress", help="Show a progress bar (not with --json)."),
    ] = True,
    tools: Annotated[
        str | None,
        typer.Option(
            "--tools",
            help="Run the real tools: a .py file or a dotted module name (arguments sampled "
            "from each tool's schema). Default: no tool runs.",
        ),
    ] = None,
) -> None:
    """Sample seeded random runs through the machine and report coverage.

    No LLM is called and no tool runs unless --tools. The report lists tools, transitions and
    rules reached and never reached, stop reasons and run lengths.
    """
    from engine.analysis.simulate import render_report, simulate_runs

    machine = load_machine(file)
    registry = None
    if tools is not None:
        from engine.errors import ToolfsmError
        from engine.runtime.agent import load_agent

        try:
            agent = load_agent(file, tools=tools)
        except ToolfsmError as exc:
            fail(str(exc))  # the rule file is valid (above): the tools module is the problem
        machine, registry = agent.machine, agent.tools
    report = simulate_runs(
        machine,
        runs=runs,
        seed=seed,
        max_steps=max_steps,
        progress=progress and not as_json,
        tools=registry,
    )
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
    else:
        render_report(report)
