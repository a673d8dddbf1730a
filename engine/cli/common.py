"""What every `toolfsm` command shares: the error line and exit codes, rule-file collection and
loading, diagnostics output, and parsing of trace steps.

Exit codes, for every command: 0 done (warnings allowed); 1 toolfsm did its job and found
errors (a rule file with errors, a check finding, a lossy translation, a run that stopped
with an error); 2 bad usage: the command could not start (a missing path, a folder where a
file is needed, an unknown option value, tool or provider, a missing API key, a store or
tools module that cannot be opened, an input that is not what the command reads);
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from engine.errors import Diagnostic
    from engine.language.loader import RuleFile
    from engine.machine import Machine
    from engine.machine.trace import TraceStep

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

STDIN = Path("-")  # `validate -` / `check -`: the rule file is read from standard input
STDIN_NAME = "<stdin>"

_verbosity = 0  # -1 with `toolfsm -q`, 1 with `toolfsm -v` (set by the global options)


def set_verbosity(level: int) -> None:
    global _verbosity
    _verbosity = level


def verbosity() -> int:
    """-1 quiet (findings only), 0 normal, 1 verbose (each file as it is done)."""
    return _verbosity


_RULE_FILE_HINT = re.compile(r"^(?:version|agent|tools|rules)\s*:", re.MULTILINE)


class DiagnosticFormat(StrEnum):
    text = "text"
    json = "json"
    github = "github"
    sarif = "sarif"


PathsArgument = typer.Argument(
    help="Rule files, or folders: the rule files in them; - reads one from standard input."
)
FormatOption = typer.Option(
    "--format",
    "-f",
    help="Output format: text (FILE:LINE:COL: ...), json, github (workflow annotations), sarif.",
)


class Failure(typer.Exit):
    """The exit of `fail`: the command could not do its job, and says why in `message`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(code)
        self.message = message


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print `toolfsm: error: MESSAGE` on standard error and exit (2 unless told otherwise)."""
    typer.echo(f"toolfsm: error: {message}", err=True)
    raise Failure(message, code)


# The commands whose `--format json` makes standard output one JSON document, whatever
# happens: inside the command `json_document` sees to it, for the command line's own errors
# (an option out of range, a missing argument) `engine.cli.run_cli`.
JSON_FORMAT_COMMANDS = ("validate", "check")


def error_document(code: str, message: str) -> str:
    """The JSON document of a failure with no place in a file: one diagnostic-shaped record."""
    import json

    record = {
        "file": None,
        "line": None,
        "column": None,
        "severity": "error",
        "code": code,
        "message": message,
        "hint": None,
        "rule": None,
    }
    return json.dumps([record], indent=2)


@contextmanager
def json_document(fmt: DiagnosticFormat) -> Iterator[None]:
    """With `--format json`, standard output is one JSON document whatever happens: a usage
    error (code "usage", exit 2) or an unexpected failure (code "internal", exit 1) is a
    record of its own, like a diagnostic without a place. Other formats pass through."""
    if fmt is not DiagnosticFormat.json:
        yield
        return
    try:
        yield
    except Failure as failure:
        typer.echo(
            error_document("usage" if failure.exit_code == EXIT_USAGE else "error", failure.message)
        )
        raise
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as exc:  # a bug: the document is still printed, saying what broke
        message = f"internal: unexpected {type(exc).__name__}: {exc}"
        typer.echo(f"toolfsm: error: {message}", err=True)
        typer.echo(error_document("internal", message))
        raise typer.Exit(EXIT_ERRORS) from exc


def require_paths(paths: Iterable[Path]) -> None:
    """Exit 2 when a path named on the command line does not exist."""
    for path in paths:
        if path != STDIN and not path.exists():
            fail(f"no such file or folder: {path}")


def require_file(path: Path, what: str = "a rule file") -> None:
    """Exit 2 unless `path` is an existing file (not a folder)."""
    if path.is_dir():
        fail(f"{path} is a folder, not {what}")
    if not path.exists():
        fail(f"no such file: {path}")


def _looks_like_rule_file(path: Path) -> bool:
    from engine.files import FileRefused, read_limited
    from engine.language.yamltree import MAX_BYTES

    try:
        text = read_limited(path, MAX_BYTES).decode("utf-8", errors="replace")
    except FileRefused:
        return True  # unreadable, too large or not a file: let validation report it
    return bool(_RULE_FILE_HINT.search(text))


def collect_rule_files(paths: list[Path], *, only_rule_files: bool = False) -> list[Path]:
    """Files named on the command line, plus the rule files found in named folders.

    In a folder, a `.yaml`/`.yml` file counts as a rule file when it has one of the top-level
    keys version/agent/tools/rules: scripts and other YAML beside rule files are skipped.
    With `only_rule_files`, files named explicitly are filtered the same way.
    """
    found: list[Path] = []
    for path in paths:
        if path == STDIN:
            found.append(path)
        elif path.is_dir():
            candidates = sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")])
            found.extend(c for c in candidates if _looks_like_rule_file(c))
        elif not only_rule_files or _looks_like_rule_file(path):
            found.append(path)
    return found


def rule_files_from_args(paths: list[Path], *, only_rule_files: bool = False) -> list[Path]:
    """The rule files that `validate`/`check` PATHS... name; exit 2 on a missing path or a
    named folder holding no rule file (a typo'd folder must not pass as "0 files, clean")."""
    require_paths(paths)
    if paths.count(STDIN) > 1:
        fail("- (standard input) can be given once")
    files = collect_rule_files(paths, only_rule_files=only_rule_files)
    for folder in (p for p in paths if p.is_dir()):
        if not collect_rule_files([folder]):
            fail(
                f"no rule file in {folder} (a .yaml/.yml file with a top-level version, agent, "
                "tools or rules key)"
            )
    return files


def read_rule_source(path: Path) -> RuleFile:
    """The rule file at `path`, or the one on standard input for `-` (named <stdin>)."""
    from engine.language.loader import parse_rules, read_rule_file
    from engine.language.yamltree import MAX_BYTES

    if path == STDIN:
        # At most the size limit plus one byte: `- < /dev/zero` must not fill memory.
        data = sys.stdin.buffer.read(MAX_BYTES + 1)
        return parse_rules(data.decode("utf-8", errors="replace"), STDIN_NAME)
    return read_rule_file(path)


def file_done(path: str, diagnostics: Sequence[Diagnostic]) -> None:
    """With `toolfsm -v`: one line per file as it is done, on standard error."""
    if _verbosity > 0:
        errors = sum(1 for d in diagnostics if d.is_error)
        warnings = len(diagnostics) - errors
        typer.echo(f"{path}: {errors} error(s), {warnings} warning(s)", err=True)


def report(
    diagnostics: Sequence[Diagnostic],
    fmt: DiagnosticFormat,
    summary: str,
    *,
    notes: Iterable[str] = (),
    tail: str = "",
) -> NoReturn:
    """Print diagnostics in `fmt` (text: then `notes`, and on standard error the line
    `SUMMARY: E error(s), W warning(s)TAIL`) and exit 1 when any is an error, else 0: the
    one output path of `validate` and `check`."""
    from engine.language.report import neutralise_commands, render

    errors = sum(1 for d in diagnostics if d.is_error)
    output = render(diagnostics, fmt.value)
    if output:
        typer.echo(output)
    if fmt is DiagnosticFormat.text and _verbosity >= 0:
        for note in notes:
            typer.echo(neutralise_commands(note))
        warnings = len(diagnostics) - errors
        typer.echo(f"{summary}: {errors} error(s), {warnings} warning(s){tail}", err=True)
    raise typer.Exit(EXIT_ERRORS if errors else EXIT_OK)


def print_errors(diagnostics: Iterable[Diagnostic]) -> None:
    """A rule file's errors, in the text format of `toolfsm validate`, on standard error."""
    from engine.language.report import as_text

    typer.echo(as_text([d for d in diagnostics if d.is_error]), err=True)


def load_rule_file(path: Path) -> RuleFile:
    """The valid rule file at `path`; exit 2 when it is missing or a folder, 1 (printing its
    errors) when it is invalid."""
    from engine.language.loader import read_rule_file

    require_file(path)
    rule_file = read_rule_file(path)
    if not rule_file.ok:
        print_errors(rule_file.diagnostics)
        raise typer.Exit(EXIT_ERRORS)
    return rule_file


def load_machine(path: Path) -> Machine:
    """The compiled machine of the rule file at `path` (exits as `load_rule_file` does)."""
    from engine.machine.compiler import compile_rules

    return compile_rules(load_rule_file(path))


def require_tool(machine: Machine, tool: str, where: str) -> None:
    """Exit 2 when `tool` is not one of the agent's tools (a typo on the command line)."""
    if tool in machine.tools:
        return
    close = difflib.get_close_matches(tool, machine.tools, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    fail(f"{where}: the agent has no tool {tool!r}; {hint}its tools: {', '.join(machine.tools)}")


MAX_REPLAY = 100_000  # steps `trace` replays once `N*STEP` repeats are expanded
_REPEAT = re.compile(r"^([0-9]+)\*(.+)$", re.DOTALL)


def expand_repeats(steps: Sequence[str]) -> list[str]:
    """`N*STEP` and `N*(STEP STEP ...)` (how `check` writes a long loop) as the steps they
    stand for; exit 2 past MAX_REPLAY steps. A tool name cannot hold `*`: no STEP is read
    differently."""
    out: list[str] = []
    for step in steps:
        match = _REPEAT.match(step)
        if match is None:
            out.append(step)
            continue
        count, body = int(match.group(1)[:9]), match.group(2)
        inner = body[1:-1].split() if body.startswith("(") and body.endswith(")") else [body]
        if len(out) + count * len(inner) > MAX_REPLAY:
            fail(f"the steps expand to more than {MAX_REPLAY} calls; too long to replay")
        out += inner * count
    return out


def parse_steps(machine: Machine, steps: Sequence[str]) -> list[TraceStep]:
    """Command-line STEPs (`tool`, `tool=OUTPUT`, or `N*STEP` repeated) as TraceSteps; exit 2
    on an empty tool name or a tool the agent does not have."""
    from engine.machine.trace import TraceStep

    steps = expand_repeats(steps)
    parsed = [TraceStep.parse(s) for s in steps]
    for number, (text, step) in enumerate(zip(steps, parsed, strict=True), 1):
        if not step.tool:
            fail(f"step {number} {text!r}: a STEP is `tool` or `tool=OUTPUT`; the tool is empty")
        require_tool(machine, step.tool, f"step {number} {text!r}")
    return parsed
