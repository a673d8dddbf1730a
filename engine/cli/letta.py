"""`toolfsm import | export`: migrate tool rules from Letta and back.

Exit codes (those of every command, `engine.cli.common`): 1 when the translation is lossy
(the output is still written, with the reasons as comments or warnings; `--allow-lossy` turns
this into 0) or the rule file is invalid; 2 on bad usage or an input that is not Letta JSON.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from engine.cli import app
from engine.cli.common import EXIT_ERRORS, fail, load_rule_file, require_file

if TYPE_CHECKING:
    from engine.letta import Imported, LettaDocument

AGENT_PLACEHOLDER = "{agent}"


def slug(name: str) -> str:
    """A file-name-safe form of an agent name."""
    text = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    return text or "agent"


def _targets(names: list[str], out: str | None) -> list[Path | None]:
    """Where each agent goes: stdout (None), one file, a folder, or a `{agent}` pattern."""
    if out is None:
        if len(names) > 1:
            fail(
                f"the file holds {len(names)} agents ({', '.join(names)}): choose one with "
                "--agent NAME, or write them all with -o FOLDER/ or -o 'PATTERN{agent}.yaml'"
            )
        return [None]
    folder = Path(out).is_dir() or out.endswith(("/", "\\"))
    if AGENT_PLACEHOLDER not in out and not folder:
        if len(names) > 1:
            fail(
                f"the file holds {len(names)} agents: -o must be a folder (existing, or ending "
                "with '/') or a pattern containing {agent}; or choose one with --agent NAME"
            )
        return [Path(out)]
    return [
        Path(out) / f"{stem}.yaml" if folder else Path(out.replace(AGENT_PLACEHOLDER, stem))
        for stem in _unique_stems(names)
    ]


def _unique_stems(names: list[str]) -> list[str]:
    """A file-name stem per agent: its slug, with -2, -3, ... for a name (or slug) seen before."""
    stems: list[str] = []
    for name in names:
        stem = slug(name)
        unique, n = stem, 2
        while unique in stems:
            unique, n = f"{stem}-{n}", n + 1
        stems.append(unique)
    return stems


@app.command("import")
def import_(
    file: Annotated[
        Path,
        typer.Argument(help="A Letta agent file (.af), agent JSON, or `tool_rules` JSON list."),
    ],
    out: Annotated[
        str | None,  # a string: a trailing '/' (a folder to create) must survive
        typer.Option(
            "--output",
            "-o",
            help="Output rule file; with several agents a folder (one NAME.yaml per agent) or a "
            "pattern containing {agent}. Default: standard output (one agent only).",
        ),
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="Import only the agent with this name or id.")
    ] = None,
    allow_lossy: Annotated[
        bool,
        typer.Option("--allow-lossy", help="Exit 0 even when some rules could not be translated."),
    ] = False,
) -> None:
    """Translate Letta tool rules into a commented toolfsm rule file.

    Reads an agent file (.af), an agent JSON object or a bare `tool_rules` list. What cannot be
    translated is written as a NOT TRANSLATED comment and makes the import lossy (exit 1).
    """
    from engine.letta import LettaFormatError, TranslationError, import_document, read_letta

    require_file(file, "a Letta JSON file")
    try:
        document = read_letta(file)
    except LettaFormatError as exc:
        fail(str(exc))
    if agent is not None:
        document = _only_agent(document, agent, file)
    targets = _targets([a.name for a in document.agents], out)
    try:
        imported = import_document(document)
    except TranslationError as exc:
        fail(f"{file}: {exc}", EXIT_ERRORS)
    lossy = False
    for item, target in zip(imported, targets, strict=True):
        _write_imported(item, target)
        lossy = lossy or item.lossy
    if lossy and not allow_lossy:
        fail(
            "the import is lossy (see the NOT TRANSLATED comments); --allow-lossy accepts it",
            EXIT_ERRORS,
        )


def _only_agent(document: LettaDocument, agent: str, file: Path) -> LettaDocument:
    """`document` with only the agents named or with the id `agent` (exit 2 when none is)."""
    agents = tuple(a for a in document.agents if agent in (a.name, a.agent_id))
    if not agents:
        names = ", ".join(a.name for a in document.agents)
        fail(f"no agent named {agent!r} in {file}; agents: {names}")
    return replace(document, agents=agents)


def _write_imported(item: Imported, target: Path | None) -> None:
    """Write one imported agent's rule file to `target` (None: standard output) and say so on
    standard error, with each rule that could not be translated."""
    if target is None:
        sys.stdout.write(item.text)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item.text, encoding="utf-8")
    where = "standard output" if target is None else str(target)
    rules = len(item.translation.spec.rules)
    typer.echo(f"{item.name}: {rules} rule(s) written to {where}", err=True)
    for skipped in item.translation.skipped:
        at = "" if skipped.index is None else f"tool_rules[{skipped.index}]: "
        typer.echo(f"  lossy: {at}{skipped.reason}", err=True)


@app.command("export")
def export(
    file: Annotated[Path, typer.Argument(help="A toolfsm rule file.")],
    letta: Annotated[
        bool, typer.Option("--letta", help="Write Letta `tool_rules` JSON (the only format).")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output JSON file (default: stdout).")
    ] = None,
    agent_json: Annotated[
        bool,
        typer.Option(
            "--agent-json",
            help="Write a Letta agent object (name, tools with schemas, tool_rules) instead of "
            "the bare list; `toolfsm import` reads it back with the full tool list.",
        ),
    ] = False,
    allow_lossy: Annotated[
        bool, typer.Option("--allow-lossy", help="Exit 0 even when the meaning may change.")
    ] = False,
) -> None:
    """Write a rule file's rules as Letta `tool_rules` JSON.

    A rule Letta would read with another meaning (loose output keys) makes the export lossy
    (exit 1).
    """
    from engine.letta import spec_to_letta, spec_to_letta_agent

    if not letta:
        fail("choose the output format: --letta")
    spec = load_rule_file(file).require()
    if agent_json:
        document, exported = spec_to_letta_agent(spec)
        payload: object = document
    else:
        exported = spec_to_letta(spec)
        payload = exported.tool_rules
    text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        typer.echo(
            f"{spec.agent}: {len(exported.tool_rules)} Letta rule(s) written to {out}", err=True
        )
    for note in exported.notes:
        typer.echo(f"  note: {note}", err=True)
    for problem in exported.problems:
        typer.echo(f"  lossy: {problem}", err=True)
    if exported.lossy and not allow_lossy:
        fail(
            "the export is lossy (Letta would not do what the rule file says: see the "
            "lines above); --allow-lossy accepts it",
            EXIT_ERRORS,
        )
