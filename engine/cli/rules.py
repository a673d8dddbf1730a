"""`toolfsm validate | graph | trace | explain`: the rule-file commands (no LLM, no store)."""

from __future__ import annotations

import json
import re
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from engine.cli import app

_RULE_FILE_HINT = re.compile(r"^(?:version|agent|tools|rules)\s*:", re.MULTILINE)


class DiagnosticFormat(StrEnum):
    text = "text"
    json = "json"
    github = "github"
    sarif = "sarif"


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"


def _looks_like_rule_file(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True  # unreadable: let validation report it
    return bool(_RULE_FILE_HINT.search(text))


def collect_rule_files(paths: list[Path], *, only_rule_files: bool = False) -> list[Path]:
    """Files named on the command line, plus the rule files found in named folders.

    In a folder, a `.yaml`/`.yml` file counts as a rule file when it has one of the top-level
    keys version/agent/tools/rules: scripts and other YAML beside rule files are skipped.
    With `only_rule_files`, files named explicitly are filtered the same way.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            candidates = sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")])
            found.extend(c for c in candidates if _looks_like_rule_file(c))
        elif not only_rule_files or _looks_like_rule_file(path):
            found.append(path)
    return found


def _fail_usage(message: str) -> None:
    typer.echo(f"toolfsm: {message}", err=True)
    raise typer.Exit(2)


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Rule files or folders of rule files.")],
    fmt: Annotated[
        DiagnosticFormat, typer.Option("--format", "-f", help="Output format.")
    ] = DiagnosticFormat.text,
    only_rule_files: Annotated[
        bool,
        typer.Option(
            "--only-rule-files",
            help="Skip named files without a top-level version/agent/tools/rules key.",
        ),
    ] = False,
) -> None:
    """Validate rule files: exit 0 when all are valid, 1 when any has an error, 2 on bad usage."""
    from engine.compiler import compile_rules
    from engine.loader import read_rule_file
    from engine.report import render

    for path in paths:
        if not path.exists():
            _fail_usage(f"no such file or folder: {path}")
    files = collect_rule_files(paths, only_rule_files=only_rule_files)
    diagnostics = []
    for path in files:
        rule_file = read_rule_file(path)
        diagnostics.extend(rule_file.diagnostics)
        if rule_file.ok:
            compile_rules(rule_file)  # compiling is part of validity (and cheap)
    errors = sum(1 for d in diagnostics if d.is_error)
    warnings = len(diagnostics) - errors
    output = render(diagnostics, fmt.value)
    if output:
        typer.echo(output)
    if fmt is DiagnosticFormat.text:
        summary = f"{len(files)} file(s) checked: {errors} error(s), {warnings} warning(s)"
        typer.echo(summary, err=True)
    raise typer.Exit(1 if errors else 0)


def _machine(path: Path):
    from engine.compiler import compile_rules
    from engine.loader import read_rule_file
    from engine.report import as_text

    if not path.exists():
        _fail_usage(f"no such file: {path}")
    rule_file = read_rule_file(path)
    if not rule_file.ok:
        typer.echo(as_text([d for d in rule_file.diagnostics if d.is_error]), err=True)
        raise typer.Exit(1)
    return compile_rules(rule_file)


@app.command()
def graph(
    file: Annotated[Path, typer.Argument(help="A rule file.")],
    fmt: Annotated[GraphFormat, typer.Option("--format", "-f")] = GraphFormat.mermaid,
    all_nodes: Annotated[
        bool, typer.Option("--all", help="Include nodes that cannot be reached from the start.")
    ] = False,
) -> None:
    """Draw the compiled machine (Mermaid stateDiagram or Graphviz DOT)."""
    from engine.fsm import markup
    from engine.render import RENDERERS

    machine = _machine(file)
    typer.echo(RENDERERS[fmt.value](markup(machine, only_reachable=not all_nodes)), nl=False)


def _steps(steps: list[str]):
    from engine.trace import TraceStep

    parsed = [TraceStep.parse(s) for s in steps]
    for step in parsed:
        if not step.tool:
            _fail_usage("a STEP is `tool` or `tool=OUTPUT`; got an empty tool name")
    return parsed


@app.command()
def trace(
    file: Annotated[Path, typer.Argument(help="A rule file.")],
    steps: Annotated[
        list[str] | None, typer.Argument(help="Steps: `tool` or `tool=OUTPUT`.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
    heartbeat: Annotated[
        bool, typer.Option("--heartbeat", help="Heartbeat mode: calls do not continue by default.")
    ] = False,
) -> None:
    """Simulate a run without an LLM: allowed tools, forcing and decisions after each step."""
    from engine.trace import trace as run_trace

    machine = _machine(file)
    rows = run_trace(machine, _steps(steps or []), heartbeat=False if heartbeat else None)
    if as_json:
        typer.echo(json.dumps([row.as_json() for row in rows], indent=2))
        return
    for row in rows:
        head = (
            "start"
            if row.after is None
            else (f"after {row.after}" + (f" = {row.output!r}" if row.output is not None else ""))
        )
        typer.echo(f"{head}  [{row.node}]")
        if row.violation:
            typer.echo(f"  VIOLATION: {row.violation}")
        if row.decision:
            detail = f" ({row.message})" if row.message else ""
            typer.echo(f"  decision: {row.decision} ({row.reason}){detail}")
        allowed = ", ".join(row.allowed) or "none: dead end"
        typer.echo(f"  allowed:  {allowed}")
        if row.force:
            typer.echo(f"  forced:   {row.forced_tool or 'yes (any allowed tool)'}")


@app.command()
def explain(
    file: Annotated[Path, typer.Argument(help="A rule file.")],
    tool: Annotated[str, typer.Argument(help="The tool to explain.")],
    steps: Annotated[
        list[str] | None, typer.Argument(help="Steps before: `tool` or `tool=OUTPUT`.")
    ] = None,
) -> None:
    """Why TOOL is or is not allowed after the given steps."""
    from engine.explain import explain as run_explain
    from engine.trace import trace as run_trace

    machine = _machine(file)
    rows = run_trace(machine, _steps(steps or []))
    for row in rows[1:]:
        if row.violation:
            typer.echo(f"note: step {row.after!r} was not allowed and is ignored: {row.violation}")
    typer.echo(str(run_explain(machine, rows[-1].position, tool)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
