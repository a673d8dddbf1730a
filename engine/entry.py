"""The `toolfsm` console script: `toolfsm --version` answers before anything is imported.

Everything else goes to `engine.cli.main` (typer and the command modules); `--version`
alone, the one command that needs none of that, is answered here in a fraction of the time.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Console-script entry point."""
    if sys.argv[1:] == ["--version"]:
        from engine.meta import version

        print(f"toolfsm {version()}")
        return
    from engine.cli import main as cli_main

    cli_main()
