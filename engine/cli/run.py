"""`toolfsm run` (run an agent, live view) and `toolfsm runs list|show|resume|approve|deny`."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from contextlib import suppress
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from engine.cli import app
from engine.cli.common import EXIT_ERRORS, EXIT_INTERRUPTED, fail, print_errors, require_file
from engine.errors import RuleFileError, ToolfsmError

if TYPE_CHECKING:
    from engine.store.status import RunStatus

runs_app = typer.Typer(
    name="runs", help="Inspect, resume, approve or deny stored runs.", no_args_is_help=True
)
app.add_typer(runs_app)


class _LazyConsole:
    """A rich Console made on first use: importing rich costs more than most commands need.

    When the output is not a terminal (a pipe, a file, CI) nothing is wrapped or cut: lines
    stay whole however long they are, and tables take the width they need.
    """

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            console = Console(stderr=self._stderr, highlight=False)
            if not console.is_terminal:
                console.soft_wrap = True
                console.width = 100_000
            self._console = console
        return getattr(self._console, name)


def escape(text: str) -> str:
    """`text` with rich markup escaped (printed as written)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


_out: Any = _LazyConsole()
_err: Any = _LazyConsole(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Run store: a database URL (sqlite:///PATH, postgresql://...) or a SQLite file "
        "path (default: $TOOLFSM_DB, else the per-user SQLite file).",
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


class RunEngine(StrEnum):
    local = "local"
    temporal = "temporal"


class GatingChoice(StrEnum):
    auto = "auto"
    allowed_tools = "allowed_tools"
    filter = "filter"


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    # One event, one line: page text and the like arrive with newlines.
    text = " ".join(text.split())
    if not _out.is_terminal:  # a log or a pipe keeps everything: nobody reads it at a glance
        return text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _next_steps(run_id: str, status: RunStatus, pending: Sequence[Any]) -> list[str]:
    """The commands a user wants next for a run in `status` whose unsettled calls are
    `pending`; each one works in that state (an approval already recorded is continued by
    `resume`, and a decision is asked for only while a side-effect call is cut off)."""
    from engine.runtime.resume import RESUMABLE
    from engine.store.status import CallStatus, RunStatus

    short = run_id[:12]
    lines = []
    if status == RunStatus.AWAITING_APPROVAL and any(
        c.status == CallStatus.AWAITING_APPROVAL for c in pending
    ):
        lines += [
            f"approve: toolfsm runs approve {short}",
            f"deny:    toolfsm runs deny {short} --reason TEXT",
        ]
    elif status == RunStatus.AWAITING_DECISION and any(
        c.status == CallStatus.STARTED and c.side_effects for c in pending
    ):
        # One command per line: a hint is pasted into a shell as it stands.
        lines += [
            f"retry:   toolfsm runs resume {short} --retry",
            f"give up: toolfsm runs resume {short} --mark-failed",
        ]
    elif status in RESUMABLE:
        lines.append(f"resume:  toolfsm runs resume {short}")
    return lines


def _store_next_steps(store: Any, run_id: str) -> list[str]:
    """`_next_steps` from what the store holds now (not what one process believes); for a
    run waiting on its callees, the paused callee runs and what to do with them."""
    from engine.store.status import RunStatus

    status = store.get_run(run_id).status
    if status is not RunStatus.AWAITING_AGENTS:
        return _next_steps(run_id, status, store.load_run(run_id).pending_calls)
    lines = []
    for callee in _paused_callees(store, run_id):
        lines.append(
            f"waiting: callee run {callee.id[:12]} (agent {callee.agent_name}) is "
            f"{callee.status}; once it goes on, this run does too"
        )
        lines += _next_steps(callee.id, callee.status, store.load_run(callee.id).pending_calls)
    return lines


def _paused_callees(store: Any, run_id: str) -> list[Any]:
    """The paused runs under run `run_id` that wait for a human (through callee levels)."""
    from engine.store.status import RunStatus

    found = []
    for callee in store.list_runs(parent=run_id, limit=1000):
        if callee.status is RunStatus.AWAITING_AGENTS:
            found += _paused_callees(store, callee.id)
        elif callee.status in (RunStatus.AWAITING_APPROVAL, RunStatus.AWAITING_DECISION):
            found.append(callee)
    return found


def _allowed(allowed: Any) -> str:
    """A step's allowed tools; none at a step that ran means the model was asked for its answer
    (a dead end stops the run before any model call)."""
    return ", ".join(allowed) or "none (answer only: reply without a tool call)"


def _args(arguments: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())


class LiveView:
    """Renders run events as they arrive, one line each; with a store, the commands to run
    next come from the run as stored once it has stopped.

    The model's text is printed as it streams in, on its `model:` line (whitespace folded,
    as every line here). In a terminal, a tool call's arguments show as they are written, on a
    line that the call's own line replaces once the reply is complete."""

    def __init__(self, console: Any, store: Any = None) -> None:
        self.console = console
        self.store = store
        self._seq: int | None = None  # the step whose header was printed last
        self.run_id: str | None = None  # known once the run has started
        self.result: Any = None  # the RunResult, once the run has stopped
        self.running: dict[str, str] = {}  # call id -> tool, for calls started without a result
        self._line: Any = None  # the streamed line being printed: "text", or a call's index
        self._shown = 0  # characters of it shown
        self._gap = False  # whitespace came last: a space before the next word

    def __call__(self, event: Any) -> None:
        from engine.runtime import events as ev

        self._step_header(event)
        if not isinstance(event, ev.TextDelta | ev.ToolCallDelta):
            self._end_line()
        c = self.console
        match event:
            case ev.RunStarted():
                self.run_id = event.run_id
                verb = "resumed" if event.resumed else "run"
                c.print(
                    f"[bold]{verb}[/bold] {event.run_id}  agent [cyan]{escape(event.agent)}"
                    f"[/cyan]  model {escape(event.model)}"
                )
            case ev.StepStarted():
                c.print(
                    f"[bold]step {event.seq}[/bold]  allowed: {_allowed(event.allowed)}"
                    f"{_forced(event.force, event.forced_tool)}"
                )
            case ev.TextDelta():
                self._stream("text", "  [green]model:[/green] ", event.text, 400)
            case ev.ToolCallDelta():
                if c.is_terminal:  # (a log keeps the call's own line only)
                    label = f"  [cyan]… {escape(event.tool or 'a call')}[/cyan] "
                    self._stream(event.index, label, event.arguments, 160)
            case ev.ToolCallStarted():
                self._call_started(event)
            case ev.ToolResultEvent():
                self.running.pop(event.call_id, None)
                colour = "red" if event.is_error else "dim"
                c.print(f"  [{colour}]← {escape(_short(event.output))}[/{colour}]")
            case ev.Violation():
                c.print(f"  [red]✗ {event.tool}: {escape(event.message)}[/red]")
            case ev.ApprovalRequested():
                c.print(
                    f"  [magenta]⏸ {event.tool}({escape(_short(_args(event.arguments)))}) "
                    f"needs approval ({event.call_id})[/magenta]"
                )
            case ev.Notice():
                c.print(f"  [yellow]! {escape(event.text)}[/yellow]")
            case ev.StepCommitted():
                c.print(
                    f"  [dim]{event.decision} ({event.reason}) → {event.position['node']}[/dim]"
                )
            case ev.Stopped():
                self._stopped(event.result)

    def _step_header(self, event: Any) -> None:
        from engine.runtime import events as ev

        seq = getattr(event, "seq", None)
        if seq is not None and seq != self._seq and not isinstance(event, ev.StepStarted):
            # A resumed run finishes its pending step first; that step started in an
            # earlier process, so no StepStarted announces it.
            self._end_line()
            self.console.print(f"[bold]step {seq}[/bold]  (resumed)")
        if seq is not None:
            self._seq = seq

    def _stream(self, line: Any, label: str, text: str, limit: int) -> None:
        """Print `text` on the streamed line `line` (opened with `label` if it is not the
        one being printed), whitespace folded; in a terminal, cut at `limit` characters."""
        if self._line != line:
            self._end_line()
            self.console.print(label, end="", soft_wrap=True)
            self._line, self._shown, self._gap = line, 0, False
        words = text.split()
        if not words:
            self._gap = self._gap or bool(text)
            return
        space = " " if self._shown and (self._gap or text[0].isspace()) else ""
        piece = space + " ".join(words)
        self._gap = text[-1].isspace()
        if self.console.is_terminal and self._shown + len(piece) > limit:
            if self._shown >= limit:
                return  # cut already
            piece = piece[: limit - self._shown - 1] + "…"
            self._shown = limit
        else:
            self._shown += len(piece)
        self.console.print(piece, end="", soft_wrap=True, markup=False, emoji=False)

    def _end_line(self) -> None:
        """End the streamed line, if one is open: a call's line is replaced by the call's
        own (in a terminal only), the text's is ended."""
        if self._line is None:
            return
        if self._line == "text":
            self.console.print()
        else:
            self.console.file.write("\r\x1b[2K")  # erase it: the call's line says it all
            self.console.file.flush()
        self._line = None

    def _call_started(self, event: Any) -> None:
        if not event.replayed:
            self.running[event.call_id] = event.tool
        tag = " [dim](from the store)[/dim]" if event.replayed else ""
        self.console.print(
            f"  [cyan]→ {event.tool}[/cyan]({escape(_short(_args(event.arguments)))}){tag}"
        )

    def _stopped(self, r: Any) -> None:
        self.result = r
        c = self.console
        colour = "red" if r.error else "bold green"
        c.print(
            f"[{colour}]stopped: {r.stop_reason.value}[/{colour}]  {r.steps} step(s), "
            f"tokens {r.usage.input_tokens} in / {r.usage.output_tokens} out  run {r.run_id}"
        )
        paused = r.pending_usage
        if paused is not None and (paused.input_tokens or paused.output_tokens):
            # The store counts finished steps only: say which part is not there yet.
            c.print(
                f"  of which step {r.steps} (paused): {paused.input_tokens} in / "
                f"{paused.output_tokens} out, stored when the step finishes (`runs "
                "show` and `runs list` count the finished steps)"
            )
        if r.error:
            c.print(f"[red]{escape(r.error)}[/red]")
        from engine.machine import StopReason

        if r.stop_reason is StopReason.AWAITING_DECISION:
            c.print(
                f"a side-effect call ({r.pending_call}) was interrupted; it may or may "
                "not have taken effect"
            )
        for line in self._next_steps(r):
            c.print(escape(line))
        c.print(f"details: toolfsm runs show {r.run_id[:12]}")

    def _next_steps(self, result: Any) -> list[str]:
        if self.store is not None:
            return _store_next_steps(self.store, result.run_id)
        from engine.runtime.loop import status_for

        return _next_steps(result.run_id, status_for(result.stop_reason), [])


def _exit_code(result: Any) -> int:
    from engine.machine import StopReason

    codes = {
        StopReason.ERROR: EXIT_ERRORS,
        StopReason.FORCING_IGNORED: EXIT_ERRORS,
        StopReason.CANCELLED: EXIT_INTERRUPTED,
    }
    return codes.get(result.stop_reason, 0)


# Sync tools run in threads with this name prefix (the event loop's default executor).
TOOL_THREAD = "toolfsm-tool"


def _run_stream(stream: Any, view: LiveView, agents: Any = None) -> Any:
    """Drive a run's event stream to its end on a new event loop; the RunResult.

    Ctrl-C cancels the run at once (it is recorded as cancelled), also while a sync tool runs:
    closing the loop does not wait for the tool's thread, which cannot be stopped; the caller
    reports the cancel and lets the user quit (`_interrupted`)."""
    import asyncio  # here, not at the top: `toolfsm --version` need not import it
    from concurrent.futures import ThreadPoolExecutor

    class ToolThreads(ThreadPoolExecutor):
        # asyncio's close waits for its executor's threads; a running tool's is left to
        # `_interrupted`, which tells the user and lets a second Ctrl-C quit.
        def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
            super().shutdown(wait=False, cancel_futures=cancel_futures)

    with asyncio.Runner() as runner:
        runner.get_loop().set_default_executor(ToolThreads(thread_name_prefix=TOOL_THREAD))
        result = runner.run(_consume(stream, view))
        if agents is not None:  # fire-and-forget callee runs still going finish first
            runner.run(agents.drain())
        return result


def _interrupted(view: LiveView, store: Any) -> NoReturn:
    """Ctrl-C during `run`, `runs resume`, `approve` or `deny`: say so, with what to do next as
    the store has it, then wait for a sync tool still running in its thread (its result is
    recorded when it returns); a second Ctrl-C quits without waiting."""
    if view.result is not None:
        # Ctrl-C reached the loop only after the run had stopped (a blocking tool and a
        # provider that never waits): the run is complete, report it as such.
        raise typer.Exit(_exit_code(view.result))
    _err.print("[yellow]cancelled[/yellow]")
    if view.run_id is not None:
        try:
            hints = _store_next_steps(store, view.run_id)
        except ToolfsmError:
            hints = [f"resume:  toolfsm runs resume {view.run_id[:12]}"]
        for line in hints:
            _err.print(escape(line))
    _wait_for_tool_threads(view)
    raise typer.Exit(EXIT_INTERRUPTED)


def _wait_for_tool_threads(view: LiveView) -> None:
    import threading

    threads = [t for t in threading.enumerate() if t.name.startswith(TOOL_THREAD)]
    if not threads or not view.running:
        return  # idle workers exit by themselves once the executor is shut down
    tools = ", ".join(sorted(set(view.running.values())))
    try:  # (before the message: the second Ctrl-C may come as soon as it is read)
        _err.print(
            f"toolfsm: waiting for a tool call that is still running ({escape(tools)}); "
            "Ctrl-C again to quit now"
        )
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        # The interpreter would wait for the thread at exit too: leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)


async def _consume(stream: Any, view: LiveView) -> Any:
    result = None
    async for event in stream:
        view(event)
        if type(event).__name__ == "Stopped":
            result = event.result
    return result


# `toolfsm run` options that set the model client, by provider option name.
_CLIENT_FLAGS = {
    "max_tokens": "--max-tokens",
    "timeout": "--timeout",
    "max_retries": "--retries",
    "gating": "--gating",
}


def _client_options(settings: Any, flags: dict[str, Any], kind: str) -> dict[str, Any]:
    """The provider options from the command line, else the agent file's `run:` block.

    A flag that does not apply to the provider is an error; a `run:` key that does not apply
    is ignored (an agent file serves several providers)."""
    given = {name: value for name, value in flags.items() if value is not None}
    takes = {"openai": set(_CLIENT_FLAGS), "anthropic": set(_CLIENT_FLAGS) - {"gating"}}.get(
        kind, set()
    )
    wrong = [_CLIENT_FLAGS[name] for name in given if name not in takes]
    if wrong:
        which = "openai" if wrong == ["--gating"] else "openai and anthropic"
        fail(f"{', '.join(wrong)} applies to {which} models only, not to --model {kind}")
    from_file = {
        "max_tokens": settings.max_tokens,
        "timeout": settings.timeout,
        "max_retries": settings.retries,
        "gating": settings.gating,
    }
    options = {name: value for name, value in from_file.items() if value is not None}
    options.update(given)
    return {name: value for name, value in options.items() if name in takes}


def _script_beside(agent_path: Path, model: str | None) -> Path:
    """The script.yaml beside the agent file, which `--model scripted` (and no --model)
    replays; exit 2 when there is none."""
    script = agent_path.resolve().parent / "script.yaml"
    if not script.is_file():
        if model is None:
            fail(
                f"no --model given and no script.yaml beside {agent_path}; pass e.g. "
                "--model openai:gpt-4.1-mini (OPENAI_API_KEY) or --model "
                "anthropic:claude-sonnet-4-0 (ANTHROPIC_API_KEY)"
            )
        fail(
            f"--model {model} replays the script.yaml beside the agent file, and there is "
            f"none beside {agent_path}; name the script: --model scripted:PATH"
        )
    return script


def _provider(
    model: str | None, agent_path: Path, provider_options: dict[str, Any]
) -> tuple[Any, str, dict[str, Any]]:
    """The provider to use, its name for the store, and the options resume needs.

    `provider_options` are `make_provider`'s keyword arguments (base URL, and any other
    provider setting `run` takes; never a secret): stored with the run as they are, so
    `runs resume / approve / deny` rebuild the same provider (`provider_for_run`).
    """
    from engine.providers import make_provider

    kind, _, arg = (model or "scripted").partition(":")
    if model is None or kind.strip().lower() == "scripted":
        script = Path(arg).resolve() if arg else _script_beside(agent_path, model)
        provider = make_provider(f"scripted:{script}", **provider_options)
        return provider, f"scripted:{script}", {"provider": "scripted", "script": str(script)}
    provider = make_provider(model, **provider_options)
    return provider, model, {"provider": kind, "provider_options": provider_options}


@app.command("run")
def run_command(
    file: Annotated[Path, typer.Argument(help="The agent file (tools, rules and run: settings).")],
    tools: ToolsOption = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="PROVIDER:MODEL, e.g. openai:gpt-4.1-mini, anthropic:claude-sonnet-4-0, "
            "scripted[:PATH], random[:SEED] (default, and scripted without PATH: the "
            "script.yaml beside the agent file).",
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
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            min=1,
            help="Most tokens per model reply (default: run.max_tokens, else the server's).",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=0.001,
            help="Seconds to wait for one model request (default: run.timeout, else 60; "
            "Anthropic 120).",
        ),
    ] = None,
    retries: Annotated[
        int | None,
        typer.Option(
            "--retries",
            min=0,
            help="Times a failed model request is tried again (default: run.retries, else 3).",
        ),
    ] = None,
    gating: Annotated[
        GatingChoice | None,
        typer.Option(
            "--gating",
            help="OpenAI and compatible servers: auto (allowed_tools, falling back to "
            "filtering the tool list where refused), allowed_tools, or filter "
            "(default: run.gating, else auto).",
        ),
    ] = None,
    agents: Annotated[
        list[Path] | None,
        typer.Option(
            "--agents",
            help="Agent files (or folders of them) the agent's agent tools may message; "
            "repeat it for several (default: the agent files under FILE's folder).",
        ),
    ] = None,
    engine: Annotated[
        RunEngine,
        typer.Option(
            "--engine",
            help="local (this process), or temporal (a workflow, run by `toolfsm worker`).",
        ),
    ] = RunEngine.local,
    address: Annotated[
        str, typer.Option("--address", help="--engine temporal: the server, HOST:PORT.")
    ] = "127.0.0.1:7233",
    task_queue: Annotated[
        str, typer.Option("--task-queue", help="--engine temporal: the workers' task queue.")
    ] = "toolfsm",
    detach: Annotated[
        bool,
        typer.Option("--detach", help="--engine temporal: print the run id and exit."),
    ] = False,
) -> None:
    """Run an agent: every step is checked against the rules and persisted."""
    from engine.runtime import Runner

    agent = _load_agent(file, tools)
    text = _input_text(input, agent.settings.input, file)
    flags = {
        "max_tokens": max_tokens,
        "timeout": timeout,
        "max_retries": retries,
        "gating": gating.value if gating is not None else None,
    }
    kind = (model or "scripted").partition(":")[0].strip().lower()
    # Every provider setting of the command line and the run: block, as make_provider takes
    # it (unset ones left out, so the provider's defaults apply then and on resume).
    provider_options = {k: v for k, v in {"base_url": base_url}.items() if v is not None}
    provider_options.update(_client_options(agent.settings, flags, kind))
    try:
        provider, name, options = _provider(model, file, provider_options)
    except ToolfsmError as exc:
        fail(str(exc))
    # Where the rules came from: resume and approve warn when the file changes.
    options["rules_file"] = str(file.resolve())
    directory = _agents(agent, file, agents, model, provider_options)
    if engine is RunEngine.temporal:
        from engine.cli.temporal import run_on_temporal

        if directory is not None:  # (a local run stores it when it starts)
            options["agents"] = directory.as_option()
        run_on_temporal(
            agent,
            text,
            name,
            options,
            db=db,
            max_steps=max_steps,
            address=address,
            task_queue=task_queue,
            detach=detach,
        )
        return
    if detach:
        fail("--detach needs --engine temporal (a local run lives in this process)")
    store = _open(db)
    runner = Runner(
        agent,
        provider,
        store=store,
        max_steps=max_steps,
        model=name,
        options=options,
        agents=directory,
    )
    view = LiveView(_out, store)
    _out.print(f"[dim]store: {store.url}[/dim]")
    try:
        result = _run_stream(runner.stream(text), view, directory)
    except ToolfsmError as exc:  # e.g. the store went away, or the run's lease was taken over
        fail(str(exc))
    except KeyboardInterrupt:
        _interrupted(view, store)
    finally:
        store.close()
    raise typer.Exit(_exit_code(result))


def _agents(
    agent: Any, file: Path, paths: list[Path] | None, model: str | None, options: dict[str, Any]
) -> Any:
    """The agents an agent with agent tools may message: `--agents`, else the agent files
    under FILE's folder (None for an agent without agent tools)."""
    from engine.runtime.agents import AgentDirectory

    if not any(t.agent_call is not None for t in agent.tools):
        if paths:
            fail(f"--agents: {file} has no agent tool that could message them")
        return None
    for path in paths or ():
        if not path.exists():
            fail(f"--agents: no such file or folder: {path}")
    try:
        return AgentDirectory.from_paths(
            paths or [file.resolve().parent], model=model, provider_options=options
        )
    except RuleFileError as exc:
        print_errors(exc.diagnostics)
        raise typer.Exit(EXIT_ERRORS) from None
    except ToolfsmError as exc:
        fail(str(exc))


def _input_text(given: str | None, from_file: str | None, file: Path) -> str:
    """The user message the run starts with: --input, else the agent file's run.input."""
    if given is not None and not given.strip():
        fail("--input is empty: give the user message the run starts with")
    text = given if given is not None else from_file
    if not text:
        fail(f"{file}: no --input given and no run.input in the agent file")
    return text


def _load_agent(file: Path, tools: str | None) -> Any:
    """The agent file compiled, with its tools module loaded; exit 1 printing the rule file's
    errors when it is invalid, 2 on any other problem (a missing file, a tools module)."""
    from engine.runtime import load_agent

    require_file(file, "an agent file")
    try:
        return load_agent(file, tools=tools)
    except RuleFileError as exc:
        print_errors(exc.diagnostics)
        raise typer.Exit(EXIT_ERRORS) from None
    except ToolfsmError as exc:
        fail(str(exc))


def _open(db: str | None) -> Any:
    """The run store `--db` names (default: $TOOLFSM_DB, else the per-user SQLite file); a
    one-line error when it cannot be opened."""
    from engine.store import open_store

    try:
        if db is not None:
            _require_db_folder(db)
        return open_store(db)
    except ToolfsmError as exc:
        fail(str(exc))


def _require_db_folder(db: str) -> None:
    """Exit 2 when `--db` names a SQLite file in a folder that does not exist: a typo in the
    path must not create folders (the per-user default's folder is made when first used)."""
    from sqlalchemy.engine import make_url

    from engine.store import resolve_db_url

    url = make_url(resolve_db_url(db))
    name = url.database or ""
    if url.get_backend_name() != "sqlite" or name in ("", ":memory:") or "mode" in url.query:
        return  # not a file path (another database, or SQLite in memory / a URI filename)
    folder = Path(name).parent
    if not folder.is_dir():
        fail(
            f"--db {db}: the folder {folder} does not exist (toolfsm creates the database "
            "file, not its folder); create the folder first, or name a file in an existing one"
        )


def _find(store: Any, run_id: str) -> Any:
    try:
        return store.find_run(run_id)
    except ToolfsmError as exc:
        fail(str(exc))


@runs_app.command("list")
def runs_list(
    db: DbOption = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="Only runs in this status: running, finished, failed, cancelled, "
            "awaiting_approval, awaiting_decision or awaiting_agents.",
        ),
    ] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only runs of this agent.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many runs.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON list of runs, each with its steps and calls.")
    ] = False,
) -> None:
    """List runs, newest first."""
    store = _open(db)
    try:
        runs = store.list_runs(status=status, agent=agent, limit=limit)
        snapshots = [store.load_run(r.id) for r in runs] if as_json else []
    finally:
        store.close()
    if as_json:
        print(json.dumps([_run_json(snap) for snap in snapshots], indent=2))
        return
    if not runs:
        which = " matching the filters" if status or agent else ""
        _out.print(f"no runs{which} in {store.url}")
        return
    _print_runs_table(runs)


def _print_runs_table(runs: list[Any]) -> None:
    """One row a run, then a note when some run's token totals leave out a paused step."""
    from rich.table import Table

    table = Table("run", "agent", "status", "stop reason", "steps", "tokens", "started")
    whole_ids = not _out.is_terminal  # a script reading the table gets ids it can use as-is
    for r, level in _tree(runs):
        branch = "  " * (level - 1) + "└ " if level else ""
        table.add_row(
            r.id if whole_ids else r.id[:12],
            branch + r.agent_name,
            r.status,
            r.stop_reason or "",
            str(r.steps_count),
            f"{r.input_tokens}/{r.output_tokens}",
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    _out.print(table)
    if any(_paused_note(r) for r in runs):
        _out.print("tokens: of the finished steps; a paused step's are added when it finishes")


def _tree(runs: list[Any]) -> list[tuple[Any, int]]:
    """The runs as a tree of agent calls: each listed callee's run under its caller's (in
    the order they started), with its level; the others newest first, as listed."""
    listed = {r.id for r in runs}
    callees: dict[str, list[Any]] = {}
    for r in runs:
        if r.parent_run_id in listed:
            callees.setdefault(r.parent_run_id, []).append(r)
    ordered: list[tuple[Any, int]] = []

    def walk(run: Any, level: int) -> None:
        ordered.append((run, level))
        for callee in sorted(callees.get(run.id, []), key=lambda c: (c.created_at, c.id)):
            walk(callee, level + 1)

    for r in runs:
        if r.parent_run_id not in listed:
            walk(r, 0)
    return ordered


def _paused_note(run: Any) -> str:
    """A label for token totals that leave out a paused step's reply (stored when it ends)."""
    from engine.store.status import RunStatus

    if run.status in (
        RunStatus.AWAITING_APPROVAL,
        RunStatus.AWAITING_DECISION,
        RunStatus.AWAITING_AGENTS,
    ):
        return " (finished steps; the paused step's are added when it finishes)"
    return ""


@runs_app.command("show")
def runs_show(
    run_id: Annotated[
        str | None,
        typer.Argument(help="A run id or a unique prefix of one (default: the newest run)."),
    ] = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="The whole stored run as JSON.")] = False,
) -> None:
    """Show a run: header, every step with its gate, calls and results, and what to do next."""
    store = _open(db)
    try:
        found = _find(store, run_id if run_id is not None else _newest_run(store))
        snap = store.load_run(found.id)
        callees = store.list_runs(parent=found.id, limit=1000)
        next_steps = _store_next_steps(store, found.id)
    finally:
        store.close()
    if as_json:
        whole = snap.model_dump(mode="json")
        whole["agent_record"] = whole.pop("agent")
        shown = {**whole, **_run_json(snap)}
        shown["callee_runs"] = [c.model_dump(mode="json") for c in reversed(callees)]
        print(json.dumps(shown, indent=2))
        return
    r = snap.run
    held = _lease_line(r)
    _print_run_header(r, held)
    by_call: dict[str, list[Any]] = {}
    for callee in reversed(callees):  # in the order they started
        by_call.setdefault(str(callee.parent_call_id), []).append(callee)
    _print_steps(snap, by_call)
    _print_paused_step(snap, by_call)
    _print_decisions(snap)
    if held.startswith("held by"):
        # Resuming, approving or deciding would be refused while that process holds it.
        _out.print("wait:    another process is running it (resume once that process is gone)")
        return
    for line in next_steps:
        _out.print(escape(line))


def _newest_run(store: Any) -> str:
    """The id of the run started last that no other run called (its callees' runs start
    after it), else of the run started last; exit 2 when the store holds none."""
    newest = store.list_runs(limit=50)
    if not newest:
        fail(f"no runs in {store.url}")
    return str(next((r for r in newest if r.parent_run_id is None), newest[0]).id)


def _print_run_header(r: Any, held: str) -> None:
    """What `runs show` says of the run itself: ids, status, totals, lease, client, input."""
    _out.print(
        f"[bold]run {r.id}[/bold]  agent {escape(r.agent_name)}  model {escape(r.model)}\n"
        f"status {r.status}  stop reason {r.stop_reason or '-'}  steps {r.steps_count}  "
        f"tokens {r.input_tokens} in / {r.output_tokens} out{_paused_note(r)}  "
        f"rules {r.rules_hash[:12]}  "
        f"started {r.created_at:%Y-%m-%d %H:%M:%S}"
    )
    if r.error:
        _out.print(f"[red]error: {escape(r.error)}[/red]")
    if r.parent_run_id is not None:
        _out.print(
            f"called by run {r.parent_run_id} (call {escape(str(r.parent_call_id))}), "
            f"depth {r.depth}"
        )
    if held:
        _out.print(escape(held))
    settings = _client_settings(r.options)
    if settings:
        _out.print(f"client: {escape(settings)}")
    _out.print(f"input: {escape(r.input)}")


def _print_steps(snap: Any, callees: dict[str, list[Any]]) -> None:
    """Every committed step: its gate, the model's reply, its calls and the loop's notices."""
    calls_by_step: dict[int, list[Any]] = {}
    for call in snap.calls:
        calls_by_step.setdefault(call.step_seq, []).append(call)
    # Messages the loop sent the model after a step (required-before-exit, forced call missing).
    notices: dict[int, list[str]] = {}
    for message in snap.messages:
        if message.role == "user" and message.step_seq is not None:
            notices.setdefault(message.step_seq, []).append(str(message.content.get("text", "")))
    for step in snap.steps:
        _out.print(
            f"[bold]step {step.seq}[/bold]  {_node(step.position_before)} → "
            f"{_node(step.position_after)}  [dim]{step.decision} ({step.reason})[/dim]"
        )
        _out.print(f"  allowed: {_allowed(step.allowed)}{_forced(step.force, step.forced_tool)}")
        _print_reply(step.reply if isinstance(step.reply, dict) else {})
        for call in calls_by_step.get(step.seq, []):
            _print_call(call, callees.get(call.call_id, ()))
        for text in notices.get(step.seq, []):
            _out.print(f"  [yellow]! {escape(text)}[/yellow]")


def _print_reply(reply: dict[str, Any]) -> None:
    """A committed step's reply: the loop's notice, the model's text, or what was malformed."""
    if reply.get("notice"):
        _out.print(f"  [yellow]! {escape(str(reply['notice']))}[/yellow]")
    if reply.get("text"):
        _out.print(f"  [green]model:[/green] {escape(_short(reply['text'], 400))}")
    if "malformed" in reply:
        _out.print(f"  [red]reply as received:[/red] {escape(_short(reply['malformed'], 400))}")


def _print_paused_step(snap: Any, callees: dict[str, list[Any]]) -> None:
    """The step not committed yet, when it has calls: its reply (stored before any tool ran)
    and those calls."""
    r = snap.run
    pending = [c for c in snap.calls if c.step_seq >= r.steps_count]
    if not pending:
        return
    from engine.runtime.resume import pending_reply

    _out.print(f"[bold]step {r.steps_count}[/bold]  (not committed yet)")
    reply_record = pending_reply(snap)
    paused_text = reply_record.content.get("text") if reply_record is not None else None
    if paused_text:
        _out.print(f"  [green]model:[/green] {escape(_short(str(paused_text), 400))}")
    for call in pending:
        _print_call(call, callees.get(call.call_id, ()))


def _print_decisions(snap: Any) -> None:
    """The audit trail: every human decision, who and when, with the arguments an approval
    changed (before -> after)."""
    if not snap.decisions:
        return
    _out.print("[bold]decisions[/bold]")
    for d in snap.decisions:
        who = d.reviewer or "-"
        line = f"  {d.decided_at:%Y-%m-%d %H:%M:%S}  {d.decision} {d.call_id} by {escape(who)}"
        if d.reason:
            line += f": {escape(_short(d.reason))}"
        _out.print(line)
        if d.arguments_after is not None:
            before = d.arguments_before if isinstance(d.arguments_before, dict) else {}
            after = d.arguments_after if isinstance(d.arguments_after, dict) else {}
            _out.print(f"    arguments before: {escape(_short(_args(before), 400))}")
            _out.print(f"    arguments after:  {escape(_short(_args(after), 400))}")


def _run_json(snap: Any) -> dict[str, Any]:
    """A stored run as `runs list --json` and `runs show --json` print it: the run's fields
    (`run_id`, `agent`, `status`, `stop_reason`, `parent_run_id`, ...) and its steps, each
    with its calls (`tool`, `status`, `arguments`, `result`, ...); calls of a step not
    committed yet are under `pending_calls`."""
    run = snap.run
    calls: dict[int, list[dict[str, Any]]] = {}
    for call in snap.calls:
        calls.setdefault(call.step_seq, []).append(call.model_dump(mode="json"))
    steps = [
        {**step.model_dump(mode="json"), "calls": calls.pop(step.seq, [])} for step in snap.steps
    ]
    return {
        "run_id": run.id,
        "agent": run.agent_name,
        "status": run.status,
        "stop_reason": run.stop_reason,
        "parent_run_id": run.parent_run_id,
        **run.model_dump(mode="json"),
        "steps": steps,
        "pending_calls": [call for pending in calls.values() for call in pending],
    }


def _lease_line(run: Any) -> str:
    """Who holds the run's lease and how fresh it is ("" when nobody does)."""
    if run.owner is None:
        return ""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    renewed = (
        f"renewed {max(0.0, (now - run.lease_renewed_at).total_seconds()):.0f} s ago"
        if run.lease_renewed_at is not None
        else "never renewed"
    )
    expires = run.lease_expires_at
    from engine.store.ids import owner_is_gone

    if owner_is_gone(run.owner):
        # Killed (kill -9 leaves its lease behind): a resume takes it over at once.
        return f"lease of {run.owner}, a process that is gone ({renewed}): a resume takes it over"
    if expires is not None and expires <= now:
        lapsed = (now - expires).total_seconds()
        return f"lease of {run.owner} lapsed {lapsed:.0f} s ago ({renewed}): a resume takes it over"
    lapses = "" if expires is None else f", lapses in {(expires - now).total_seconds():.0f} s"
    return f"held by {run.owner} (lease {renewed}{lapses})"


def _client_settings(options: Any) -> str:
    """The model client settings a run was started with, in one line ("" when defaults)."""
    if not isinstance(options, dict):
        return ""
    given = options.get("provider_options")
    if not isinstance(given, dict):
        return ""
    names = {"base_url": "base URL", "max_retries": "retries"}
    return ", ".join(f"{names.get(k, k)} {v}" for k, v in given.items() if v is not None)


def _node(position: Any) -> str:
    return str(position.get("node", "?")) if isinstance(position, dict) else "?"


def _forced(force: bool, forced_tool: str | None) -> str:
    if forced_tool:
        return f" [yellow](forced: {forced_tool})[/yellow]"
    return " [yellow](call required)[/yellow]" if force else ""


def _raw_args(call: Any) -> str:
    """A rejected call's arguments (never parsed by the tool), shown like accepted ones."""
    try:
        value = json.loads(call.arguments_raw)
    except ValueError:
        return str(call.arguments_raw)
    return _args(value) if isinstance(value, dict) else str(call.arguments_raw)


def _print_call(call: Any, callees: Any = ()) -> None:
    args = _args(call.arguments) if isinstance(call.arguments, dict) else _raw_args(call)
    took = f" {call.duration_ms} ms" if call.duration_ms is not None else ""
    _out.print(
        f"  [cyan]{call.call_id}[/cyan] {call.tool}({escape(_short(args))}) \\[{call.status}]{took}"
    )
    if call.result is not None:
        colour = "red" if call.is_error else "dim"
        # Errors keep more text: a violation names the rule (file:line) at its end.
        limit = 400 if call.is_error else 160
        _out.print(f"    [{colour}]{escape(_short(call.result, limit))}[/{colour}]")
    for callee in callees:
        _out.print(
            f"    ↳ callee run {callee.id[:12]}  agent {escape(callee.agent_name)}  "
            f"{callee.status}  {callee.stop_reason or '-'}  {callee.steps_count} step(s)"
        )


def _prepare(store: Any, run: Any, tools: str | None, *, deciding: bool, owner: str | None) -> Any:
    """A runner for a stored run, or a one-line error: its agent recompiled from the stored
    rules with the tools module loaded (every tool there), its provider rebuilt with the
    run's settings. Done before a decision is recorded, so a failure here uses nothing up
    (`deciding`: the decision checks the run's status itself; `owner`: the lease id the
    decision will hold the run under, for the resume to go on with)."""
    from engine.runtime import Runner
    from engine.runtime.resume import RESUMABLE, open_agent, provider_for_run, rules_file_changed

    if not deciding and run.status not in RESUMABLE:
        fail(
            f"run {run.id} is {run.status} ({run.stop_reason}); only runs that are "
            f"{', '.join(RESUMABLE)} can be resumed"
        )
    from engine.runtime.agents import AgentLink, agents_from_run

    try:
        agent, run = open_agent(store, run.id, tools=tools)
        provider = provider_for_run(run, store.load_run(run.id))
        agents = agents_from_run(run)
    except RuleFileError as exc:  # the stored rule text no longer validates (toolfsm changed)
        print_errors(exc.diagnostics)
        raise typer.Exit(EXIT_ERRORS) from None
    except ToolfsmError as exc:
        fail(str(exc))
    changed = rules_file_changed(store, run)
    if changed is not None:
        _err.print(f"toolfsm: warning: {escape(changed)}", soft_wrap=True)
    return Runner(
        agent,
        provider,
        store=store,
        max_steps=run.options.get("max_steps"),
        model=run.model,
        options={k: v for k, v in run.options.items() if k not in ("tools", "max_steps")},
        owner=owner,
        agents=agents,
        link=AgentLink.of_run(run),
    )


def _resume(
    db: str | None,
    run_id: str,
    tools: str | None,
    decision: Any = None,
    decide: Any = None,
    verb: str = "",
    on_temporal: Any = None,
) -> None:
    """Resume a run (claiming it first: a run another live process runs is refused); with
    `decide(store, run_id, owner)` (approve, deny), record that decision first, once
    everything the resume needs has been checked, so a failure uses no decision up."""
    from engine.store.ids import new_owner_id

    store = _open(db)
    try:
        run = _find(store, run_id)
        if _on_temporal(store, run, on_temporal):
            return
        # A decision is recorded under a lease of the run (one reviewer at a time), which
        # the resume then goes on under; a plain resume claims the run itself.
        owner = new_owner_id() if decide is not None else None
        runner = _prepare(store, run, tools, deciding=decide is not None, owner=owner)
        if decide is not None:
            try:
                record = decide(store, run.id, owner, runner.agent)
            except ToolfsmError as exc:
                fail(str(exc))
            _out.print(f"{verb} {record.call_id} ({record.tool})")
        view = LiveView(_out, store)
        try:
            stream = runner.resume_stream(run.id, decision=decision)
            result = _run_stream(stream, view, runner.agents)
        except ToolfsmError as exc:
            _give_up(store, run.id, owner)
            fail(str(exc))
        except KeyboardInterrupt:
            _interrupted(view, store)
        result = _resume_callers(store, run.id, result)
    finally:
        store.close()
    raise typer.Exit(_exit_code(result))


def _on_temporal(store: Any, run: Any, on_temporal: Any) -> bool:
    """A run that lives on Temporal (its options say where) is decided on by its workflow:
    `on_temporal` (an `engine.temporal.wire.Decision`) goes there as an update (False: a
    local run)."""
    from engine.temporal.wire import location_of

    location = location_of(run.options)
    if location is None:
        return False
    if on_temporal is None:
        fail(
            f"run {run.id} runs on Temporal ({location.address}); its workers resume it "
            "themselves (runs resume only gives a decision there: --retry or --mark-failed)"
        )
    if run.status.value not in ("awaiting_approval", "awaiting_decision"):
        fail(f"run {run.id} is {run.status}, not waiting for a decision")
    verb = {"approve": "approved", "deny": "denied", "retry": "retrying", "fail": "marked failed"}
    from engine.cli.temporal import decide_on_temporal

    decide_on_temporal(store, run, location, on_temporal, verb[on_temporal.decision])
    return True


def _resume_callers(store: Any, run_id: str, result: Any) -> Any:
    """A callee's run that ended leaves its caller waiting (`awaiting_agents`): resume the
    caller, and its caller in turn, as long as each one was waiting; the last result."""
    from engine.runtime.agents import waiting_caller

    caller = waiting_caller(store, run_id)
    while caller is not None:
        _out.print(f"[bold]resuming caller[/bold] run {caller.id} (agent {caller.agent_name})")
        runner = _prepare(store, caller, None, deciding=False, owner=None)
        view = LiveView(_out, store)
        try:
            result = _run_stream(runner.resume_stream(caller.id), view, runner.agents)
        except ToolfsmError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            _interrupted(view, store)
        caller = waiting_caller(store, caller.id)
    return result


def _give_up(store: Any, run_id: str, owner: str | None) -> None:
    """Release the lease a decision was recorded under, when the run cannot be resumed now."""
    if owner is not None:
        with suppress(ToolfsmError):
            store.release_run(run_id, owner)


@runs_app.command("resume")
def runs_resume(
    run_id: Annotated[str, RunIdArgument],
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
        fail("give --retry or --mark-failed, not both")
    from engine.temporal.wire import Decision

    decision = "retry" if retry else "fail" if mark_failed else None
    on_temporal = Decision(decision) if decision is not None else None
    _resume(db, run_id, tools, decision, on_temporal=on_temporal)


RunIdArgument = typer.Argument(help="A run id or a unique prefix of one.")
CallOption = typer.Option(
    "--call", help="The id of the waiting call, e.g. call_3 (default: the only waiting call)."
)


def _decide(
    db: str | None, run_id: str, tools: str | None, decide: Any, verb: str, on_temporal: Any
) -> None:
    """Record a decision on the call a run is waiting on (`decide(store, run_id, owner)`
    returns the call's record) under a claim of the run's lease, then resume the run under
    that claim: a second reviewer is refused while this one holds it, and finds the call
    decided after."""
    _resume(db, run_id, tools, decide=decide, verb=verb, on_temporal=on_temporal)


ByOption = typer.Option(
    "--by", help="Who decides, for the run's audit trail (default: your OS user name)."
)


def _edited(arguments: str | None) -> dict[str, Any] | None:
    """`--arguments JSON` as an object, or a one-line error."""
    if arguments is None:
        return None
    try:
        value = json.loads(arguments)
    except ValueError as exc:
        fail(f"--arguments is not valid JSON: {exc}")
    if not isinstance(value, dict):
        fail("--arguments must be a JSON object, e.g. '{\"amount\": 20}'")
    return value


@runs_app.command("approve")
def runs_approve(
    run_id: Annotated[str, RunIdArgument],
    call: Annotated[str | None, CallOption] = None,
    arguments: Annotated[
        str | None,
        typer.Option(
            "--arguments",
            help="Run the call with these arguments instead (a JSON object; checked against "
            "the tool's schema and the rules, whose prefilled values win).",
        ),
    ] = None,
    by: Annotated[str | None, ByOption] = None,
    tools: ToolsOption = None,
    db: DbOption = None,
) -> None:
    """Approve the call a run is waiting on (optionally with edited arguments), then resume."""
    from engine.runtime import approve
    from engine.runtime.approval import default_reviewer
    from engine.temporal.wire import Decision

    edited = _edited(arguments)
    _decide(
        db,
        run_id,
        tools,
        lambda store, rid, owner, agent: approve(
            store, rid, call_id=call, owner=owner, arguments=edited, by=by, agent=agent
        ),
        "approved",
        Decision("approve", call, by=by or default_reviewer(), arguments=edited),
    )


@runs_app.command("deny")
def runs_deny(
    run_id: Annotated[str, RunIdArgument],
    reason: Annotated[str, typer.Option("--reason", help="Why; the model reads it.")],
    call: Annotated[str | None, CallOption] = None,
    by: Annotated[str | None, ByOption] = None,
    tools: ToolsOption = None,
    db: DbOption = None,
) -> None:
    """Deny the call a run is waiting on (the model gets the reason), then resume the run."""
    from engine.runtime import deny
    from engine.runtime.approval import default_reviewer
    from engine.temporal.wire import Decision

    _decide(
        db,
        run_id,
        tools,
        lambda store, rid, owner, agent: deny(store, rid, reason, call_id=call, owner=owner, by=by),
        "denied",
        Decision("deny", call, reason=reason, by=by or default_reviewer()),
    )
