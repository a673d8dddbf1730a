"""The `toolfsm` command line: one module per group of commands, registered here.

Each command module imports only what it needs (lazily for heavy parts such as the LLM SDKs),
so `toolfsm validate` over hundreds of files stays fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="toolfsm",
    help="Tool rules for LLM agents, compiled to an explicit finite-state machine.",
    epilog="Exit codes: 0 done; 1 errors found (an invalid rule file, a check finding, a lossy "
    "import or export, a run that stopped with an error); 2 bad usage (a missing file, an "
    "unknown option value, tool or provider, a missing API key, a store or tools module that "
    "cannot be opened); 130 interrupted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules register themselves on `app` when imported; `toolfsm --help` lists the
# commands in this order: rule files, analysis, runs, migration.
# isort: off
from engine.cli import rules as _rules  # noqa: E402,F401
from engine.cli import check as _check  # noqa: E402,F401
from engine.cli import run as _run  # noqa: E402,F401
from engine.cli import letta as _letta  # noqa: E402,F401
from engine.cli import lsp as _lsp  # noqa: E402,F401
# isort: on


def main() -> None:
    """Console-script entry point."""
    app()
