"""`python -m engine` is the `toolfsm` command."""

from engine.cli import main

main()
