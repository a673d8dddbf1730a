"""`toolfsm check | simulate`: prove a rule file cannot trap an agent, and sample its runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from engine.cli import app
from engine.cli.rules import DiagnosticFormat, _fail_usage, _machine, collect_rule_files


@app.command()
def check(
    paths: Annotated[list[Path], typer.Argument(help="Rule files or folders of rule files.")],
    fmt: Annotated[
        DiagnosticFormat, typer.Option("--format", "-f", help="Output format.")
    ] = DiagnosticFormat.text,
    max_states: Annotated[
        int, typer.Option("--max-states", min=1, help="Bound on explored positions per file.")
    ] = 200_000,
    show_silenced: Annotated[
        bool, typer.Option("--show-silenced", help="Also list silenced warnings (text format).")
    ] = False,
) -> None:
    """Validate and check rule files: dead ends, traps, unreachable tools, `expect:` assertions.

    Exit 0 when no file has an error, 1 when any has, 2 on bad usage.
    """
    from engine.analysis.check import check_path
    from engine.report import render

    for path in paths:
        if not path.exists():
            _fail_usage(f"no such file or folder: {path}")
    files = collect_rule_files(paths)
    diagnostics = []
    silenced = []
    states = 0
    for path in files:
        result = check_path(path, max_states=max_states)
        diagnostics.extend(result.diagnostics)
        silenced.extend(result.silenced)
        states += result.states
    errors = sum(1 for d in diagnostics if d.is_error)
    warnings = len(diagnostics) - errors
    output = render(diagnostics, fmt.value)
    if output:
        typer.echo(output)
    if fmt is DiagnosticFormat.text:
        if show_silenced:
            for diagnostic, reason in silenced:
                typer.echo(f"{diagnostic.span}: silenced[{diagnostic.code}]: {reason}")
        summary = (
            f"{len(files)} file(s) checked, {states} position(s) explored: {errors} error(s), "
            f"{warnings} warning(s), {len(silenced)} silenced"
        )
        typer.echo(summary, err=True)
    raise typer.Exit(1 if errors else 0)


@app.command()
def simulate(
    file: Annotated[Path, typer.Argument(help="A rule file.")],
    runs: Annotated[int, typer.Option("--runs", "-n", min=1, help="Number of runs.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same runs).")] = 0,
    max_steps: Annotated[
        int, typer.Option("--max-steps", min=1, help="Step limit of each run.")
    ] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    tools: Annotated[
        str | None,
        typer.Option(
            "--tools",
            help="Run the real tools: a .py file or a dotted module name (arguments sampled "
            "from each tool's schema). Default: no tool runs.",
        ),
    ] = None,
) -> None:
    """Random-policy runs through the machine (no LLM; no tools run unless --tools), then a
    coverage report."""
    from engine.analysis.simulate import render_report, simulate_runs

    machine = _machine(file)
    registry = None
    if tools is not None:
        from engine.errors import ToolfsmError
        from engine.runtime.agent import load_agent

        try:
            agent = load_agent(file, tools=tools)
        except ToolfsmError as exc:
            typer.echo(f"toolfsm: {exc}", err=True)
            raise typer.Exit(1) from None
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
