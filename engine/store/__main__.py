"""Developer entry point: `python -m engine.store revision "what changed"` drafts a migration."""

from __future__ import annotations

import sys

from engine.store.migrate import make_revision


def main(argv: list[str] | None = None) -> int:
    """Draft a new Alembic revision from the difference between the tables and head."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "revision":
        print('usage: python -m engine.store revision "what changed"', file=sys.stderr)
        return 2
    make_revision(args[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
