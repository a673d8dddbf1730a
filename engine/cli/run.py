"""`toolfsm run` (run an agent, live view) and `toolfsm runs list|show|resume|approve|deny`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.cli import app

runs_app = typer.Typer(
    name="runs", help="Inspect, resume, approve or deny stored runs.", no_args_is_help=True
)
app.add_typer(runs_app)

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db", help="Database URL (default: $TOOLFSM_DB, else the per-user SQLite file)."
    ),
]
ToolsOption = Annotated[
    str | None,
    typer.Option(
        "--tools",
        help="Tools module: a .py file or a dotted module name (default: run.tools_module in "
        "the agent file, else tools.py beside it).",
    ),
]


def _known_errors() -> tuple[type[Exception], ...]:
    """The errors toolfsm raises on purpose: shown as one line, not a traceback."""
    from engine.errors import ToolfsmError
    from engine.providers.errors import ProviderError
    from engine.store.errors import StoreError

    return (ToolfsmError, ProviderError, StoreError)


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _args(arguments: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())


class LiveView:
    """Renders run events as they arrive, one line each."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, event: Any) -> None:
        from engine.runtime import events as ev

        c = self.console
        match event:
            case ev.RunStarted():
                verb = "resumed" if event.resumed else "run"
                c.print(
                    f"[bold]{verb}[/bold] {event.run_id}  agent [cyan]{escape(event.agent)}"
                    f"[/cyan]  model {escape(event.model)}"
                )
            case ev.StepStarted():
                forced = (
                    f" [yellow](forced: {event.forced_tool})[/yellow]"
                    if event.forced_tool
                    else (" [yellow](call required)[/yellow]" if event.force else "")
                )
                c.print(
                    f"[bold]step {event.seq}[/bold]  allowed: {', '.join(event.allowed)}{forced}"
                )
            case ev.TextDelta():
                c.print(f"  [green]model:[/green] {escape(_short(event.text, 400))}")
            case ev.ToolCallStarted():
                tag = " [dim](from the store)[/dim]" if event.replayed else ""
                c.print(
                    f"  [cyan]→ {event.tool}[/cyan]({escape(_short(_args(event.arguments)))}){tag}"
                )
            case ev.ToolResultEvent():
                colour = "red" if event.is_error else "dim"
                c.print(f"  [{colour}]← {escape(_short(event.output))}[/{colour}]")
            case ev.Violation():
                c.print(f"  [red]✗ {event.tool}: {escape(event.message)}[/red]")
            case ev.ApprovalRequested():
                c.print(
                    f"  [magenta]⏸ {event.tool}({escape(_short(_args(event.arguments)))}) needs "
                    f"approval[/magenta]: toolfsm runs approve {event.run_id[:12]} "
                    f"--call {event.call_id}  |  toolfsm runs deny {event.run_id[:12]} "
                    f"--reason TEXT"
                )
            case ev.Notice():
                c.print(f"  [yellow]! {escape(event.text)}[/yellow]")
            case ev.StepCommitted():
                c.print(
                    f"  [dim]{event.decision} ({event.reason}) → {event.position['node']}[/dim]"
                )
            case ev.Stopped():
                r = event.result
                colour = "red" if r.error else "bold green"
                c.print(
                    f"[{colour}]stopped: {r.stop_reason.value}[/{colour}]  {r.steps} step(s), "
                    f"tokens {r.usage.input_tokens} in / {r.usage.output_tokens} out  run {r.run_id}"
                )
                if r.error:
                    c.print(f"[red]{escape(r.error)}[/red]")
                if r.stop_reason.value == "awaiting_decision":
                    c.print(
                        f"a side-effect call ({r.pending_call}) was interrupted: "
                        f"toolfsm runs resume {r.run_id[:12]} --retry | --mark-failed"
                    )


def _exit_code(result: Any) -> int:
    return {"error": 1, "cancelled": 130}.get(result.stop_reason.value, 0)


async def _consume(stream: Any, view: LiveView) -> Any:
    result = None
    async for event in stream:
        view(event)
        if type(event).__name__ == "Stopped":
            result = event.result
    return result


def _provider(model: str | None, agent_path: Path, base_url: str | None) -> tuple[Any, str, dict]:
    """The provider to use, its name for the store, and the options resume needs."""
    from engine.providers import make_provider

    if model is None:
        script = agent_path.resolve().parent / "script.yaml"
        if not script.is_file():
            raise _fail(
                f"no --model given and no script.yaml beside {agent_path}; pass e.g. "
                "--model openai:gpt-4.1-mini (OPENAI_API_KEY) or --model "
                "anthropic:claude-sonnet-4-0 (ANTHROPIC_API_KEY)"
            )
        model = f"scripted:{script}"
    kind, _, arg = model.partition(":")
    if kind == "scripted":
        path = str(Path(arg).resolve()) if arg else ""
        provider = make_provider(f"scripted:{path}" if path else "scripted")
        return provider, f"scripted:{path}", {"provider": "scripted", "script": path}
    provider = make_provider(model, base_url=base_url)
    return provider, model, {"provider": kind, "base_url": base_url}


@app.command("run")
def run_command(
    file: Annotated[Path, typer.Argument(help="The agent file (tools, rules and run: settings).")],
    tools: ToolsOption = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="PROVIDER:MODEL, e.g. openai:gpt-4.1-mini, anthropic:claude-sonnet-4-0, "
            "scripted:PATH, random:SEED (default: the script.yaml beside the agent file).",
        ),
    ] = None,
    input: Annotated[
        str | None, typer.Option("--input", help="The user message (default: run.input).")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="API base URL (OpenAI-compatible servers).")
    ] = None,
    db: DbOption = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Step limit (default: run.max_steps).")
    ] = None,
) -> None:
    """Run an agent: every step is checked against the rules and persisted."""
    from engine.runtime import Runner, load_agent
    from engine.store import open_store

    try:
        agent = load_agent(file, tools=tools)
    except _known_errors() as exc:
        raise _fail(str(exc)) from None
    text = input if input is not None else agent.settings.input
    if not text:
        raise _fail(f"{file}: no --input given and no run.input in the agent file")
    try:
        provider, name, options = _provider(model, file, base_url)
        store = open_store(db)
    except _known_errors() as exc:
        raise _fail(str(exc)) from None
    runner = Runner(agent, provider, store=store, max_steps=max_steps, model=name, options=options)
    view = LiveView(_out)
    _out.print(f"[dim]store: {store.url}[/dim]")
    try:
        result = asyncio.run(_consume(runner.stream(text), view))
    except KeyboardInterrupt:
        _err.print("[yellow]cancelled[/yellow]")
        raise typer.Exit(130) from None
    finally:
        store.close()
    raise typer.Exit(_exit_code(result))


def _open(db: str | None) -> Any:
    from engine.store import open_store

    try:
        return open_store(db)
    except _known_errors() as exc:
        raise _fail(str(exc)) from None


def _find(store: Any, run_id: str) -> Any:
    try:
        return store.find_run(run_id)
    except _known_errors() as exc:
        raise _fail(str(exc)) from None


@runs_app.command("list")
def runs_list(
    db: DbOption = None,
    status: Annotated[
        str | None, typer.Option("--status", help="Only runs in this status.")
    ] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only runs of this agent.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list.")] = False,
) -> None:
    """List runs, newest first."""
    store = _open(db)
    try:
        runs = store.list_runs(status=status, agent=agent, limit=limit)
    finally:
        store.close()
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in runs], indent=2))
        return
    table = Table("run", "agent", "status", "stop reason", "steps", "tokens", "started")
    for r in runs:
        table.add_row(
            r.id[:12],
            r.agent_name,
            r.status,
            r.stop_reason or "",
            str(r.steps_count),
            f"{r.input_tokens}/{r.output_tokens}",
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    _out.print(table)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="A run id or a unique prefix of one.")],
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="The whole stored run as JSON.")] = False,
) -> None:
    """Show a run: header, every step with its gate and calls, and the conversation."""
    store = _open(db)
    try:
        snap = store.load_run(_find(store, run_id).id)
    finally:
        store.close()
    if as_json:
        print(snap.model_dump_json(indent=2))
        return
    r = snap.run
    _out.print(
        f"[bold]run {r.id}[/bold]  agent {r.agent_name}  model {r.model}\n"
        f"status {r.status}  stop reason {r.stop_reason}  steps {r.steps_count}  "
        f"tokens {r.input_tokens}/{r.output_tokens}  rules {r.rules_hash[:12]}"
    )
    if r.error:
        _out.print(f"[red]error: {escape(r.error)}[/red]")
    _out.print(f"input: {escape(r.input)}")
    calls_by_step: dict[int, list[Any]] = {}
    for call in snap.calls:
        calls_by_step.setdefault(call.step_seq, []).append(call)
    for step in snap.steps:
        forced = (
            f" forced {step.forced_tool}" if step.forced_tool else (" forced" if step.force else "")
        )
        _out.print(
            f"[bold]step {step.seq}[/bold] {step.position_before['node']} → "
            f"{step.position_after['node']}  allowed: {', '.join(step.allowed)}{forced}  "
            f"{step.decision} ({step.reason})"
        )
        reply = step.reply or {}
        if reply.get("text"):
            _out.print(f"  [green]model:[/green] {escape(_short(reply['text'], 400))}")
        for call in calls_by_step.get(step.seq, []):
            _print_call(call)
    pending = [c for c in snap.calls if c.step_seq >= r.steps_count]
    if pending:
        _out.print(f"[bold]step {r.steps_count}[/bold] (not committed)")
        for call in pending:
            _print_call(call)


def _print_call(call: Any) -> None:
    args = _args(call.arguments) if isinstance(call.arguments, dict) else call.arguments_raw
    took = f" {call.duration_ms} ms" if call.duration_ms is not None else ""
    _out.print(
        f"  [cyan]{call.call_id}[/cyan] {call.tool}({escape(_short(args))}) \\[{call.status}]{took}"
    )
    if call.result is not None:
        colour = "red" if call.is_error else "dim"
        _out.print(f"    [{colour}]{escape(_short(call.result))}[/{colour}]")


def _resume(db: str | None, run_id: str, tools: str | None, decision: Any = None) -> None:
    from engine.runtime import Runner, open_agent, provider_for_run

    store = _open(db)
    try:
        run = _find(store, run_id)
        try:
            agent, run = open_agent(store, run.id, tools=tools)
            provider = provider_for_run(run, store.load_run(run.id))
        except _known_errors() as exc:
            raise _fail(str(exc)) from None
        runner = Runner(
            agent,
            provider,
            store=store,
            max_steps=run.options.get("max_steps"),
            model=run.model,
            options={k: v for k, v in run.options.items() if k not in ("tools", "max_steps")},
        )
        try:
            result = asyncio.run(
                _consume(runner.resume_stream(run.id, decision=decision), LiveView(_out))
            )
        except _known_errors() as exc:
            raise _fail(str(exc)) from None
    finally:
        store.close()
    raise typer.Exit(_exit_code(result))


@runs_app.command("resume")
def runs_resume(
    run_id: Annotated[str, typer.Argument(help="A run id or a unique prefix of one.")],
    retry: Annotated[
        bool, typer.Option("--retry", help="Run an interrupted side-effect call again.")
    ] = False,
    mark_failed: Annotated[
        bool,
        typer.Option("--mark-failed", help="Record an interrupted side-effect call as failed."),
    ] = False,
    tools: ToolsOption = None,
    db: DbOption = None,
) -> None:
    """Resume a run from its last committed step (after a crash, a cancel or a decision)."""
    if retry and mark_failed:
        raise _fail("give --retry or --mark-failed, not both")
    _resume(db, run_id, tools, "retry" if retry else "fail" if mark_failed else None)


@runs_app.command("approve")
def runs_approve(
    run_id: Annotated[str, typer.Argument(help="A run id or a unique prefix of one.")],
    call: Annotated[str | None, typer.Option("--call", help="The call to approve.")] = None,
    tools: ToolsOption = None,
    db: DbOption = None,
) -> None:
    """Approve the call a run is waiting on, then resume the run."""
    from engine.runtime import approve

    store = _open(db)
    try:
        run = _find(store, run_id)
        try:
            record = approve(store, run.id, call_id=call)
        except _known_errors() as exc:
            raise _fail(str(exc)) from None
        _out.print(f"approved {record.call_id} ({record.tool})")
    finally:
        store.close()
    _resume(db, run.id, tools)


@runs_app.command("deny")
def runs_deny(
    run_id: Annotated[str, typer.Argument(help="A run id or a unique prefix of one.")],
    reason: Annotated[str, typer.Option("--reason", help="Why; the model reads it.")],
    call: Annotated[str | None, typer.Option("--call", help="The call to deny.")] = None,
    tools: ToolsOption = None,
    db: DbOption = None,
) -> None:
    """Deny the call a run is waiting on (the model gets the reason), then resume the run."""
    from engine.runtime import deny

    store = _open(db)
    try:
        run = _find(store, run_id)
        try:
            record = deny(store, run.id, reason, call_id=call)
        except _known_errors() as exc:
            raise _fail(str(exc)) from None
        _out.print(f"denied {record.call_id} ({record.tool})")
    finally:
        store.close()
    _resume(db, run.id, tools)
