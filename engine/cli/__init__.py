"""The `toolfsm` command line: one module per group of commands, registered here.

Each command module imports only what it needs, inside the command (the rule language, the
store, rich, the LLM SDKs), so `toolfsm --version` and `toolfsm validate` stay fast.

Every error, toolfsm's own and the command line's (an unknown option, a missing argument),
comes out in one style: `toolfsm: error: MESSAGE` on standard error, exit 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from engine.cli import common

app = typer.Typer(
    name="toolfsm",
    help="Tool rules for LLM agents, compiled to an explicit finite-state machine.",
    epilog="Exit codes: 0 done; 1 errors found (an invalid rule file, a check finding, a lossy "
    "import or export, a run that stopped with an error); 2 bad usage (a missing file, an "
    "unknown option value, tool or provider, a missing API key, a store or tools module that "
    "cannot be opened); 130 interrupted.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from engine.meta import version

        typer.echo(f"toolfsm {version()}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print toolfsm's version and exit.",
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Print only the findings (no summary line, no notes)."),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also print each file as it is done.")
    ] = False,
) -> None:
    """Tool rules for LLM agents, compiled to an explicit finite-state machine."""
    if quiet and verbose:
        # A usage error of the command line's own (click's): with `check --format json` it
        # comes as the JSON document too, like an option out of range.
        raise typer.BadParameter("give one of them, not both", param_hint="'-q' / '-v'")
    common.set_verbosity(-1 if quiet else 1 if verbose else 0)


# Command modules register themselves on `app` when imported; `toolfsm --help` lists the
# commands in this order: rule files, analysis, runs, migration.
# isort: off
from engine.cli import rules as _rules  # noqa: E402,F401
from engine.cli import check as _check  # noqa: E402,F401
from engine.cli import run as _run  # noqa: E402,F401
from engine.cli import letta as _letta  # noqa: E402,F401
from engine.cli import lsp as _lsp  # noqa: E402,F401
from engine.cli import ui as _ui  # noqa: E402,F401
from engine.cli import temporal as _temporal  # noqa: E402,F401
# isort: on


def _usage_message(exc: typer.TyperException) -> str:
    """Click's message in toolfsm's style: lower case, no final period, and where to look."""
    text = exc.format_message().strip().rstrip(".")
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and getattr(exc, "exit_code", 1) == common.EXIT_USAGE:
        text += f" (see '{ctx.command_path} --help')"
    return text


def _asks_for_json(args: Sequence[str]) -> bool:
    """Whether `toolfsm ARGS` runs a command with `--format json` (the last `--format` given
    counts, as click takes it; words after `--` are arguments, not options)."""
    words = list(args)
    if "--" in words:
        words = words[: words.index("--")]
    # The global options are flags: the first other word names the command.
    command = next((word for word in words if not word.startswith("-")), None)
    if command not in common.JSON_FORMAT_COMMANDS:
        return False
    fmt = None
    for word, following in zip(words, [*words[1:], None], strict=True):
        if word in ("--format", "-f"):
            fmt = following
        elif word.startswith("--format="):
            fmt = word.partition("=")[2]
        elif word.startswith("-f") and not word.startswith("--"):
            fmt = word[2:]  # -fjson
    return fmt == common.DiagnosticFormat.json.value


def _usage_error(exc: typer.TyperException, args: Sequence[str]) -> int:
    """Report a command-line error (click's) in toolfsm's style; with `--format json` also as
    the JSON document on standard output that the command's other errors come as."""
    message = _usage_message(exc)
    code = int(getattr(exc, "exit_code", common.EXIT_USAGE))
    typer.echo(f"toolfsm: error: {message}", err=True)
    if _asks_for_json(args):
        typer.echo(
            common.error_document("usage" if code == common.EXIT_USAGE else "error", message)
        )
    return code


def run_cli(args: Sequence[str]) -> int:
    """Run `toolfsm ARGS...` and return its exit code (errors printed in one style)."""
    from engine.errors import ToolfsmError

    command = typer.main.get_command(app)
    try:
        result = command.main(list(args), prog_name="toolfsm", standalone_mode=False)
    except typer.TyperException as exc:  # the command line's own errors (click's)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `toolfsm` or `toolfsm runs` alone
            # The help: click's is the message; typer's rich help printed itself already.
            exc.show()  # type: ignore[attr-defined]  # click's UsageError.show
            return common.EXIT_USAGE
        return _usage_error(exc, args)
    except typer.Abort:
        typer.echo("toolfsm: error: interrupted", err=True)
        return common.EXIT_INTERRUPTED
    except ToolfsmError as exc:  # a command that did not catch its own: still one line
        typer.echo(f"toolfsm: error: {exc}", err=True)
        return common.EXIT_USAGE
    except Exception as exc:  # a bug: one line, not a traceback (TOOLFSM_DEBUG=1 shows it)
        if os.environ.get("TOOLFSM_DEBUG"):
            raise
        typer.echo(
            f"toolfsm: error: internal: unexpected {type(exc).__name__}: {exc} (a bug in "
            "toolfsm; TOOLFSM_DEBUG=1 shows where)",
            err=True,
        )
        return common.EXIT_ERRORS
    return result if isinstance(result, int) else common.EXIT_OK


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_cli(sys.argv[1:]))
