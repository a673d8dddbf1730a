"""Resuming a stored run: rebuild agent, provider and state from what the store holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import ToolfsmError
from engine.providers.base import Provider, Usage
from engine.runtime.agent import Agent, agent_from_text
from engine.runtime.state import PendingStep, RunState, message_from_dict, reply_from_dict
from engine.store.ids import rules_hash
from engine.store.protocol import Append, Store
from engine.store.records import MessageRecord, RunRecord, RunSnapshot
from engine.store.status import RunStatus

__all__ = [
    "ResumeError",
    "load_state",
    "open_agent",
    "pending_reply",
    "provider_for_run",
    "provider_settings",
    "rules_file_changed",
]

# Statuses a run can be resumed from: "running" means the process that ran it died;
# "failed" is a stop with `error` (a server down, a timeout), resumed once the cause is fixed.
# A finished run stays finished.
RESUMABLE = tuple(status for status in RunStatus if status.is_resumable)


class ResumeError(ToolfsmError):
    """A run cannot be resumed (finished, rules changed, tools missing...)."""


def open_agent(store: Store, run_id: str, *, tools: str | None = None) -> tuple[Agent, RunRecord]:
    """The agent of a stored run, recompiled from the rule text stored with it, and the run.

    `tools` overrides the tools module recorded when the run started.
    """
    run = store.get_run(run_id)
    agent_record = store.get_agent(run.agent_id)
    ref = tools or run.options.get("tools")
    if not ref or not isinstance(ref, str):
        raise ResumeError(
            f"run {run.id} has no recorded tools module (it was started with tools given in "
            "code); pass --tools MODULE"
        )
    agent = agent_from_text(
        agent_record.rules_text, agent_record.rules_path or f"<run {run.id}>", tools=ref
    )
    return agent, run


def provider_settings(run: RunRecord) -> dict[str, Any]:
    """The provider settings stored with a run: `options["provider_options"]`, the keyword
    arguments `make_provider` got when the run started (base URL, gating mode, timeout, ...;
    never a secret). Runs stored before it kept only `base_url`."""
    opts = run.options
    stored = opts.get("provider_options")
    if isinstance(stored, dict):
        return dict(stored)
    return {"base_url": opts["base_url"]} if opts.get("base_url") is not None else {}


def provider_for_run(
    run: RunRecord, snapshot: RunSnapshot | None = None, **options: Any
) -> Provider:
    """Rebuild the provider a run was started with, with the settings stored with it
    (`provider_settings`; `options` override them). API keys come from the environment.

    A scripted provider resumes after the replies the run already used.
    """
    from engine.providers import make_provider

    opts = run.options
    if opts.get("provider") == "scripted":
        from engine.providers.scripted import ScriptedProvider, load_script

        path = str(opts["script"])
        used = 0
        if snapshot is not None:
            used = sum(1 for m in snapshot.messages if m.role == "assistant")
        return ScriptedProvider(load_script(path), source=str(path), start=used)
    return make_provider(run.model, **{**provider_settings(run), **options})


def rules_file_changed(store: Store, run: RunRecord) -> str | None:
    """A warning when the rule file a run was started from now holds other rules than the
    text stored with the run (which the run keeps), naming both hashes; None otherwise."""
    path = run.options.get("rules_file") or store.get_agent(run.agent_id).rules_path
    if not path:
        return None
    try:
        text = Path(str(path)).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # gone or unreadable: nothing to compare
    on_disk = rules_hash(text)
    if on_disk == run.rules_hash:
        return None
    return (
        f"{path} changed since run {run.id[:12]} started: its rules are {on_disk[:12]} now, "
        f"the run's are {run.rules_hash[:12]}; the run goes on with the rules it started with"
    )


def pending_reply(snapshot: RunSnapshot) -> MessageRecord | None:
    """The stored message of the reply whose step is not committed (step `steps_count`), if
    any. A reply is stored when it arrives, tied to its step; the step commit comes later.

    Rows written before replies carried their step have none (NULL): one of them is the
    pending reply only if it is the last reply and there are more replies than committed
    steps (every step stores exactly one reply).
    """
    steps = snapshot.run.steps_count
    replies = [m for m in snapshot.messages if m.role == "assistant"]
    for record in reversed(replies):
        if record.step_seq == steps:
            return record
    if replies and replies[-1].step_seq is None and len(replies) > steps:
        return replies[-1]
    return None


def load_state(
    store: Store, run_id: str, agent: Agent, owner: str
) -> tuple[RunState, PendingStep | None]:
    """The state after the run's last committed step, and its pending step, if any.

    Marks the run running again (a `resumed` event, under `owner`'s lease, which the caller
    holds); only a run in a resumable status is accepted (a second process resuming the
    same paused run gets `RunStateConflict`).
    """
    snapshot = store.load_run(run_id)
    run = snapshot.run
    if not run.status.is_resumable:
        raise ResumeError(
            f"run {run.id} is {run.status} ({run.stop_reason}); only runs that are "
            f"{', '.join(RESUMABLE)} can be resumed"
        )
    if rules_hash(agent.rules_text) != run.rules_hash:
        raise ResumeError(
            f"run {run.id} was started with rules {run.rules_hash[:12]}, but the agent given "
            f"has {rules_hash(agent.rules_text)[:12]}; resume with the stored rules"
        )
    machine = agent.machine
    position = _stored_position(machine, run)
    pending_record = pending_reply(snapshot)
    stored_reply = None
    messages = []
    for record in snapshot.messages:
        if record is pending_record:
            stored_reply = reply_from_dict(dict(record.content))
        else:
            messages.append(message_from_dict(dict(record.content)))
    seq = run.steps_count
    last_text = next((m.text for m in reversed(messages) if m.role == "assistant" and m.text), None)
    state = RunState(
        run_id=run.id,
        position=position,
        messages=messages,
        seq=seq,
        usage=Usage(run.input_tokens, run.output_tokens),
        used_call_ids=dict.fromkeys(c.call_id for c in snapshot.calls if c.step_seq < seq),
        last_text=last_text,
        next_message=max((m.seq for m in snapshot.messages), default=-1) + 1,
        next_event=snapshot.next_event + 1,  # after the `resumed` event below
    )
    pending = None
    if stored_reply is not None:
        recorded = {c.call_id: c for c in snapshot.calls if c.step_seq == seq}
        started = min((c.started_at for c in recorded.values()), default=run.updated_at)
        pending = PendingStep(
            seq=seq,
            position_before=position,
            gate=machine.gate(position),
            reply=stored_reply,
            started_at=started,
            call_keys=state.call_keys(seq, stored_reply.tool_calls),
            recorded=recorded,
        )
    from engine.store.events import Resumed

    resumed = Resumed(previous=run.status, by=owner)
    (error,) = store.append([Append(run.id, owner, [resumed], seq=snapshot.next_event)])
    if error is not None:
        raise error
    return state, pending


def _stored_position(machine: Any, run: Any) -> Any:
    """Where a stored run stands (the start if it has not moved)."""
    stored = run.position
    if stored is None:
        return machine.start()
    if not isinstance(stored, dict):
        raise ResumeError(
            f"run {run.id}: its stored position is not a JSON object but "
            f"{type(stored).__name__}; the store is damaged"
        )
    return machine.load(stored)
