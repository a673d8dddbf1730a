"""`python -m engine` is the `toolfsm` command."""

from engine.entry import main

main()
