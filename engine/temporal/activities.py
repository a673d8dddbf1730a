"""The activities of a run's workflow: each writes the journal's queued appends first, then
does its one piece of I/O (see `engine.temporal.workflow`)."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pydantic_core import to_jsonable_python
from temporalio import activity
from temporalio.exceptions import ApplicationError

from engine.providers.base import Message, Provider
from engine.providers.errors import MalformedReply, ProviderError
from engine.providers.scripted import ScriptedProvider
from engine.runtime.agents import AgentLink, Waiting, agents_from_run, call_agents
from engine.runtime.approval import approve, deny
from engine.runtime.journal import run_created
from engine.runtime.loop import Runner
from engine.runtime.resume import provider_for_run
from engine.runtime.state import message_from_dict, reply_to_dict
from engine.store.events import Resumed
from engine.store.protocol import Append, Store
from engine.store.records import RunSnapshot
from engine.store.status import CallStatus
from engine.temporal.shelf import AgentShelf
from engine.temporal.wire import (
    CreateRun,
    DecideCall,
    Decided,
    ModelCall,
    ToolCallInput,
    ToolOutcome,
    WireAppend,
)
from engine.tools import ToolResult

__all__ = ["HELD", "RunActivities"]

# A Temporal run's lease: held by its workflow for as long as it lives (ten years), so no
# local process claims it; it is given up when the run ends.
HELD = 10 * 365 * 24 * 3600.0
HEARTBEAT_EVERY = 1.0  # seconds (the workflow's heartbeat timeout is 5)


@asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Tell Temporal this worker is alive while the activity waits (a model, a tool)."""

    async def beat() -> None:
        # Not at once: a heartbeat is a request to the server (about 4 ms of a round trip
        # that is 8 ms in all), and most model replies and tools of a step come sooner.
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY)
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


class RunActivities:
    """The activities, bound to one store and the agents one worker serves."""

    def __init__(self, store: Store, shelf: AgentShelf) -> None:
        self.store = store
        self.shelf = shelf
        # Each run's model, kept across its steps (an SDK client, or a parsed script, is
        # costly to make): (provider, the run's replies when it was made, replies it had left).
        self._providers: OrderedDict[str, tuple[Provider, int, int]] = OrderedDict()

    def all(self) -> Sequence[Callable[..., Any]]:
        return [
            self.create_run,
            self.ask_model,
            self.run_tool,
            self.call_agents,
            self.write,
            self.decide,
        ]

    @activity.defn(name="toolfsm.create_run")
    async def create_run(self, created: CreateRun) -> None:
        spec = created.spec
        agent = self.shelf.find(spec.agent, spec.rules_sha256)
        record = self.store.save_agent(agent.name, agent.rules_text, agent.rules_path)
        first = Message(role="user", text=spec.input)
        event = run_created(record, spec.model, created.options, first, created.position)
        append = Append(spec.run_id, created.owner, [event], lease_seconds=HELD, seq=0)
        (error,) = self.store.append([append])
        if error is not None and self._owner_of(spec.run_id) != created.owner:
            raise error  # (the same owner: an earlier attempt created it)

    @activity.defn(name="toolfsm.ask_model")
    async def ask_model(self, asked: ModelCall) -> dict[str, Any]:
        agent = self.shelf.find(asked.agent, asked.rules_sha256)
        self._write(asked.writes)
        snapshot = self.store.load_run(asked.run_id)
        messages = tuple(message_from_dict(dict(m.content)) for m in snapshot.messages)
        if len(messages) != asked.messages:
            raise ApplicationError(
                f"run {asked.run_id}: the store holds {len(messages)} messages, the workflow "
                f"{asked.messages}; the run's record was changed behind its workflow",
                type="RunDiverged",
                non_retryable=True,
            )
        machine = agent.machine
        position = machine.load(asked.position) if asked.position else machine.start()
        request = agent.request(machine.gate(position), messages)
        provider = self._provider(snapshot)
        async with _heartbeating():
            try:
                reply = await provider.complete(request)
            except MalformedReply as exc:
                raise _malformed(exc) from None
            except ProviderError as exc:
                details = {
                    "message": exc.message,
                    "provider": exc.provider,
                    "kind": exc.kind,
                    "retryable": exc.retryable,
                    "status_code": exc.status_code,
                    "request_id": exc.request_id,
                }
                raise ApplicationError(
                    str(exc), details, type="ProviderError", non_retryable=True
                ) from None
        return reply_to_dict(reply)

    @activity.defn(name="toolfsm.run_tool")
    async def run_tool(self, call: ToolCallInput) -> ToolOutcome:
        agent = self.shelf.find(call.agent, call.rules_sha256)
        self._write(call.writes)
        tool = agent.tools.get(call.tool)
        if tool is None:
            raise ApplicationError(
                f"agent {agent.name} has no tool {call.tool!r}", non_retryable=True
            )
        arguments, _ = tool.parse(json.dumps(call.arguments))
        async with _heartbeating():
            running = tool.execute_now(arguments)
            result = running if isinstance(running, ToolResult) else await running
        output = to_jsonable_python(result.output, fallback=str)
        return ToolOutcome(output, result.is_error, result.duration_ms)

    @activity.defn(name="toolfsm.call_agents")
    async def call_agents(self, call: ToolCallInput) -> ToolOutcome:
        """An agent tool's call: its callees run here as local runs of this worker, in the
        same store, under the run's link. Re-entrant, as locally: a retry (this worker
        died) finds the callee runs the first attempt started and goes on with them."""
        agent = self.shelf.find(call.agent, call.rules_sha256)
        self._write(call.writes)
        tool = agent.tools.get(call.tool)
        if tool is None or tool.agent_call is None:
            raise ApplicationError(f"{call.tool!r} is no agent tool", non_retryable=True)
        snapshot = self.store.load_run(call.run_id)
        run = snapshot.run
        caller = Runner(
            agent,
            provider_for_run(run, snapshot),
            store=self.store,
            model=run.model,
            agents=agents_from_run(run),
            link=AgentLink.of_run(run),
        )
        async with _heartbeating():
            result = await call_agents(caller, run.id, call.key, tool, call.arguments)
        if isinstance(result, Waiting):
            return ToolOutcome(None, False, 0, list(result.runs))
        return ToolOutcome(result.output, result.is_error, result.duration_ms)

    @activity.defn(name="toolfsm.write")
    async def write(self, writes: list[WireAppend]) -> None:
        self._write(writes)

    @activity.defn(name="toolfsm.decide")
    async def decide(self, call: DecideCall) -> Decided:
        """Record an approval or a denial as `runs approve` / `runs deny` do (a retry or a
        give-up is recorded by the loop), then mark the run running again."""
        agent = self.shelf.find(call.agent, call.rules_sha256)
        store, run_id, owner, decision = self.store, call.run_id, call.owner, call.decision
        snapshot = store.load_run(run_id)
        record = _call(snapshot, call.call_id)
        if record.status is CallStatus.AWAITING_APPROVAL:  # (not decided by an earlier try)
            if decision.decision == "approve":
                approve(
                    store,
                    run_id,
                    call_id=call.call_id,
                    owner=owner,
                    arguments=decision.arguments,
                    by=decision.by,
                    agent=agent,
                )
            elif decision.decision == "deny":
                deny(
                    store,
                    run_id,
                    decision.reason or "",
                    call_id=call.call_id,
                    owner=owner,
                    by=decision.by,
                )
        run = store.get_run(run_id)
        if run.status.is_resumable and run.status.value != "running":
            resumed = Resumed(previous=run.status, by=owner)
            (error,) = store.append([Append(run_id, owner, [resumed], lease_seconds=HELD)])
            if error is not None:
                raise error
        store.renew_lease(run_id, owner, seconds=HELD)  # (a decision's claim set 30 s)
        snapshot = store.load_run(run_id)
        record = _call(snapshot, call.call_id)
        step_calls = [
            c.model_dump(mode="json") for c in snapshot.calls if c.step_seq == record.step_seq
        ]
        return Decided(
            call.call_id,
            record.tool,
            record.status.value,
            decision.decision,
            step_calls,
            snapshot.next_event,
        )

    # -- helpers ---------------------------------------------------------------------

    def _write(self, writes: Sequence[WireAppend]) -> None:
        """Append the queued writes; one an earlier attempt of this activity wrote already
        (its numbers are taken) is skipped, any other refusal raised."""
        if not writes:
            return
        appends = [w.append() for w in writes]
        errors = self.store.append(appends)
        if not any(errors):
            return
        next_event = self.store.load_run(appends[0].run_id).next_event
        for append, error in zip(appends, errors, strict=True):
            if error is None:
                continue
            written = append.seq is not None and next_event >= append.seq + len(append.events)
            if not written:
                raise error

    def _owner_of(self, run_id: str) -> str | None:
        try:
            return self.store.get_run(run_id).owner
        except Exception:
            return None

    def _provider(self, snapshot: RunSnapshot) -> Provider:
        """The run's model: the one this worker made for an earlier step of the run, while it
        stands where the run does (a scripted one has given exactly the replies the store
        holds: another worker may have run steps in between), else made anew from the run's
        stored settings."""
        run = snapshot.run
        used = sum(1 for m in snapshot.messages if m.role == "assistant")
        kept = self._providers.get(run.id)
        if kept is not None:
            provider, made_at, left = kept
            if not isinstance(provider, ScriptedProvider) or provider.remaining == left - (
                used - made_at
            ):
                self._providers.move_to_end(run.id)
                return provider
        provider = provider_for_run(run, snapshot)
        left = provider.remaining if isinstance(provider, ScriptedProvider) else 0
        self._providers[run.id] = (provider, used, left)
        while len(self._providers) > 256:
            self._providers.popitem(last=False)
        return provider


def _call(snapshot: RunSnapshot, call_id: str) -> Any:
    for record in snapshot.calls:
        if record.call_id == call_id:
            return record
    raise ApplicationError(f"run {snapshot.run.id} has no call {call_id!r}", non_retryable=True)


def _malformed(exc: MalformedReply) -> ApplicationError:
    message = exc.message.removeprefix("malformed reply: ")
    details = {
        "message": message,
        "provider": exc.provider,
        "raw": exc.raw,
        "tool_choice_sent": to_jsonable_python(exc.tool_choice_sent, fallback=str),
    }
    return ApplicationError(str(exc), details, type="MalformedReply", non_retryable=True)
