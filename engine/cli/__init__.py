"""The `toolfsm` command line: one module per group of commands, registered here.

Each command module imports only what it needs (lazily for heavy parts such as the LLM SDKs),
so `toolfsm validate` over hundreds of files stays fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="toolfsm",
    help="Tool rules for LLM agents, compiled to an explicit finite-state machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules register themselves on `app` when imported.
from engine.cli import check as _check  # noqa: E402,F401
from engine.cli import letta as _letta  # noqa: E402,F401
from engine.cli import rules as _rules  # noqa: E402,F401
from engine.cli import run as _run  # noqa: E402,F401


def main() -> None:
    """Console-script entry point."""
    app()
