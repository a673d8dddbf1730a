"""`toolfsm ui`: the local web console over a run store (extra `toolfsm[ui]`)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from engine.cli import app
from engine.cli.common import fail


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command("ui")
def ui(
    db: Annotated[
        str | None,
        typer.Option(
            "--db", help="Database URL (default: $TOOLFSM_DB, else the per-user SQLite file)."
        ),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (loopback unless --token is given).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8765,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="TOOLFSM_UI_TOKEN",
            help="Require this token on every request (needed to listen beyond loopback).",
        ),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option("--user", help="Who decides in the audit trail (default: your OS user)."),
    ] = None,
) -> None:
    """Serve the web console: the runs list (live), each run's steps and machine diagram,
    approve (optionally with edited arguments) or deny the call a run waits on; and the
    JSON API under /api."""
    if not _loopback(host) and not token:
        fail(f"--host {host} is reachable from other machines: give --token (or $TOOLFSM_UI_TOKEN)")
    if token is not None and len(token) < 16:
        fail("--token must be at least 16 characters")
    try:
        import uvicorn

        from engine.ui.app import create_app
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in ("starlette", "uvicorn"):
            raise
        fail("the web console needs: pip install 'toolfsm[ui]'")
    from engine.cli.run import _open
    from engine.runtime.approval import default_reviewer

    store = _open(db)
    try:
        console = create_app(store, user=user or default_reviewer(), token=token)
        shown = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
        typer.echo(f"toolfsm ui: serving {store.url} on {shown}", err=True)
        uvicorn.run(console, host=host, port=port, log_level="warning", access_log=False)
    finally:
        store.close()
