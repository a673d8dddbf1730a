"""`toolfsm lsp`: the language server for rule files, over stdio (extra `toolfsm[lsp]`)."""

from __future__ import annotations

from engine.cli import app
from engine.cli.common import fail


@app.command("lsp")
def lsp() -> None:
    """Serve the language server for rule files over stdio (for editors): diagnostics of
    validate and check, hover, completion, go-to-definition, "did you mean" quick fixes."""
    try:
        from engine.lsp.server import serve
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in ("pygls", "lsprotocol"):
            raise
        fail("the language server needs: pip install 'toolfsm[lsp]'")
    serve()
